"""triton-softmax: row softmax. The shared kernel verifier (kernel_kit) does the checking."""

import os

import kernel_kit as kk

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"float32": (1e-6, 1e-5), "float16": (1e-3, 1e-2), "bfloat16": (4e-3, 2e-2)}


def softmax_case(dtype, rows, cols):
    return kk.make_case([kk.tensor([rows, cols], dtype, scale=3.0)], [rows, cols], dtype)


def cases(rng, gpu):
    return kk.twice([softmax_case(*dims) for dims in kk.row_shapes(rng, gpu, max_cols=20000)])


def bench_cases(gpu):
    return [softmax_case("float32", 8192, 3000), softmax_case("float16", 8192, 8192)]


PROBLEM = kk.Problem(name="triton-softmax", module="kernel", entry="softmax", reference=os.path.join(HERE, "reference.py"),
                     cases=cases, bench_cases=bench_cases, tolerance=TOLERANCE, plausible_max=None)

if __name__ == "__main__":
    kk.main(PROBLEM)
