"""triton-matmul-epilogue: gelu(a @ b + bias), fp16/bf16 on a GPU. The shared kernel verifier
(kernel_kit) does the checking."""

import os

import kernel_kit as kk

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (3e-2, 2e-2)}


def matmul_case(dtype, m, k, n):
    args = [kk.tensor([m, k], dtype), kk.tensor([k, n], dtype, scale=k ** -0.5), kk.tensor([n], dtype, scale=0.5)]
    return kk.make_case(args, [m, n], dtype)


def cases(rng, gpu):
    """Hidden shapes: tiny, ragged, large; in the interpreter small, float32 and float16."""
    if gpu:
        dims = [("float16", rng.randint(1, 40), rng.randint(1, 70), rng.randint(1, 90)),
                ("float16", rng.randint(500, 3000), rng.randint(500, 4096), rng.randint(500, 3000)),
                ("bfloat16", rng.randint(100, 2000), rng.randint(1000, 4096), rng.randint(100, 2000))]
    else:  # the Triton interpreter: small, fp32 and fp16
        dims = [("float32", rng.randint(3, 40), rng.randint(1, 70), rng.randint(3, 50)),
                ("float16", rng.randint(20, 70), rng.randint(30, 100), rng.randint(20, 70))]
    return kk.twice([matmul_case(*d) for d in dims])


def bench_cases(gpu):
    return [matmul_case("float16", 4096, 4096, 4096), matmul_case("bfloat16", 8192, 2048, 3072)]


PROBLEM = kk.Problem(name="triton-matmul-epilogue", module="kernel", entry="matmul_bias_gelu",
                     reference=os.path.join(HERE, "reference.py"), cases=cases, bench_cases=bench_cases,
                     tolerance=TOLERANCE, plausible_max=None)

if __name__ == "__main__":
    kk.main(PROBLEM)
