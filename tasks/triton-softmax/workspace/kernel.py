"""Row softmax in Triton: out[i, :] = softmax(x[i, :]) for a 2-D tensor x.

Called as softmax(x, out): x is contiguous, float32, float16 or bfloat16; out is a contiguous
tensor of the same shape and dtype, which the kernel must fill. Correct, and slow: one
program per row reads the row three times, in small blocks.
"""

import triton
import triton.language as tl


@triton.jit
def softmax_rows(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n_cols
    out_row = out_ptr + row * n_cols
    # pass 1: the row's maximum
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m = tl.maximum(m, x)
    row_max = tl.max(m, 0)
    # pass 2: the sum of exponentials
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        s += tl.exp(x - row_max)
    total = tl.sum(s, 0)
    # pass 3: normalise and write
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - row_max) / total
        tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=cols < n_cols)


def softmax(x, out):
    n_rows, n_cols = x.shape
    softmax_rows[(n_rows,)](x, out, n_cols, BLOCK=64)
