"""triton-causal-attention: softmax(q k^T / sqrt(d), causal) v. The shared kernel verifier
(kernel_kit) does the checking."""

import os

import kernel_kit as kk

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (3e-2, 2e-2)}


def attention_case(dtype, batch, heads, seq, dim):
    shape = [batch, heads, seq, dim]
    return kk.make_case([kk.tensor(shape, dtype) for _ in "qkv"], shape, dtype)


def cases(rng, gpu):
    """Hidden shapes: tiny, ragged, large; in the interpreter small, float32 and float16."""
    if gpu:
        dims = [("float16", 1, 2, rng.randint(1, 40), 64), ("float16", 2, rng.randint(2, 8), rng.randint(100, 2048), 64),
                ("bfloat16", 1, rng.randint(2, 8), rng.randint(100, 2048), 128),
                ("float16", 2, 3, rng.randint(500, 1500), 32)]
    else:  # the Triton interpreter: small, fp32 and fp16
        dims = [("float32", 1, 2, rng.randint(3, 40), 16), ("float16", 2, 1, rng.randint(20, 50), 32)]
    return kk.twice([attention_case(*d) for d in dims])


def bench_cases(gpu):
    return [attention_case("float16", 4, 16, 2048, 64), attention_case("bfloat16", 2, 16, 4096, 128)]


PROBLEM = kk.Problem(name="triton-causal-attention", module="kernel", entry="causal_attention",
                     reference=os.path.join(HERE, "reference.py"), cases=cases, bench_cases=bench_cases,
                     tolerance=TOLERANCE, plausible_max=None)

if __name__ == "__main__":
    kk.main(PROBLEM)
