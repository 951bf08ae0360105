"""RMS norm in Triton: out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight.

Called as rmsnorm(x, weight, eps, out): x is a contiguous 2-D tensor (float32, float16 or
bfloat16), weight a vector of x's last dimension and dtype, eps a float; out is contiguous,
of x's shape and dtype, and the kernel must fill it. Correct, and slow: one program per row,
two passes over it in small blocks.
"""

import triton
import triton.language as tl


@triton.jit
def rmsnorm_rows(x_ptr, w_ptr, out_ptr, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    # pass 1: the mean of squares
    sq = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        sq += x * x
    rstd = 1.0 / tl.sqrt(tl.sum(sq, 0) / n_cols + eps)
    # pass 2: scale and write
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=cols < n_cols)


def rmsnorm(x, weight, eps, out):
    n_rows, n_cols = x.shape
    rmsnorm_rows[(n_rows,)](x, weight, out, n_cols, eps, BLOCK=64)
