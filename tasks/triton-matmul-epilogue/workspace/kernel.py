"""A matmul with a fused epilogue in Triton: out = gelu_tanh(a @ b + bias).

Called as matmul_bias_gelu(a, b, bias, out): a (M, K) and b (K, N) contiguous, float16 or
bfloat16 (float32 too, on the CPU interpreter), bias (N,), out (M, N), all of one dtype; the
kernel must fill out. Correct, and slow: one program per output row and block of columns,
multiply-and-sum on the vector units (no tl.dot, so no tensor cores), in float32.
"""

import triton
import triton.language as tl


@triton.jit
def gelu_tanh(x):
    # 0.5 * x * (1 + tanh(z)) == x * sigmoid(2 z), z = sqrt(2 / pi) * (x + 0.044715 x^3)
    z = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    return x / (1.0 + tl.exp(-2.0 * z))


@triton.jit
def matmul_rows(a_ptr, b_ptr, bias_ptr, out_ptr, M, N, K, BN: tl.constexpr, BK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros([BN], tl.float32)
    for start in range(0, K, BK):
        ks = start + tl.arange(0, BK)
        a = tl.load(a_ptr + row * K + ks, mask=ks < K, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + ks[:, None] * N + cols[None, :], mask=(ks[:, None] < K) & (cols[None, :] < N),
                    other=0.0).to(tl.float32)
        acc += tl.sum(a[:, None] * b, 0)
    acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * N + cols, gelu_tanh(acc).to(out_ptr.dtype.element_ty), mask=cols < N)


def matmul_bias_gelu(a, b, bias, out):
    M, K = a.shape
    N = b.shape[1]
    matmul_rows[(M, triton.cdiv(N, 32))](a, b, bias, out, M, N, K, BN=32, BK=32)
