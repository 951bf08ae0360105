"""triton-rmsnorm: RMS norm over the last dimension, times a weight. The shared kernel
verifier (kernel_kit) does the checking."""

import os

import kernel_kit as kk

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"float32": (1e-5, 1e-5), "float16": (2e-3, 1e-2), "bfloat16": (1e-2, 2e-2)}


def rmsnorm_case(dtype, rows, cols, eps):
    args = [kk.tensor([rows, cols], dtype, scale=2.0, shift=0.5), kk.tensor([cols], dtype, scale=0.5, shift=1.0),
            kk.scalar(eps)]
    return kk.make_case(args, [rows, cols], dtype)


def cases(rng, gpu):
    return kk.twice([rmsnorm_case(dt, m, n, rng.choice([1e-5, 1e-6]))
                     for dt, m, n in kk.row_shapes(rng, gpu, max_cols=16384)])


def bench_cases(gpu):
    return [rmsnorm_case("float16", 16384, 4096, 1e-6), rmsnorm_case("bfloat16", 8192, 8192, 1e-6),
            rmsnorm_case("float32", 8192, 2048, 1e-5)]


PROBLEM = kk.Problem(name="triton-rmsnorm", module="kernel", entry="rmsnorm", reference=os.path.join(HERE, "reference.py"),
                     cases=cases, bench_cases=bench_cases, tolerance=TOLERANCE, plausible_max=None)

if __name__ == "__main__":
    kk.main(PROBLEM)
