"""Row softmax in Triton, fused: each row is read once and kept in registers (rows up to
MAX_BLOCK wide); wider rows take an online (one-pass max and sum) kernel plus a write pass."""

import triton
import triton.language as tl

MAX_BLOCK = 16384


@triton.jit
def softmax_whole_row(x_ptr, out_ptr, n_rows, n_cols, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    for r in range(ROWS):
        # past the last row, redo the last row (the same bits again: harmless)
        row = tl.minimum(tl.program_id(0) * ROWS + r, n_rows - 1).to(tl.int64)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=float("-inf")).to(tl.float32)
        x = x - tl.max(x, 0)
        e = tl.exp(x)
        y = e / tl.sum(e, 0)
        tl.store(out_ptr + row * n_cols + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_online(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n_cols
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        new_m = tl.maximum(m, x)
        s = s * tl.exp(m - new_m) + tl.exp(x - new_m)
        s = tl.where(new_m == float("-inf"), 0.0, s)
        m = new_m
    row_max = tl.max(m, 0)
    total = tl.sum(s * tl.exp(m - row_max), 0)
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (tl.exp(x - row_max) / total).to(out_ptr.dtype.element_ty),
                 mask=cols < n_cols)


def softmax(x, out):
    n_rows, n_cols = x.shape
    if n_cols <= MAX_BLOCK:
        block = triton.next_power_of_2(n_cols)
        warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
        rows = 4 if block <= 256 else 1  # narrow rows: several per program
        softmax_whole_row[(triton.cdiv(n_rows, rows),)](x, out, n_rows, n_cols, BLOCK=block, ROWS=rows, num_warps=warps)
    else:
        softmax_online[(n_rows,)](x, out, n_cols, BLOCK=4096, num_warps=8)
