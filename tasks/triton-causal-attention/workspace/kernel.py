"""Causal attention in Triton: out = softmax(q k^T / sqrt(d) + causal mask) v, per batch and head.

Called as causal_attention(q, k, v, out): q, k, v and out are contiguous (batch, heads, seq,
dim) tensors of one dtype, float16 or bfloat16 (float32 too, on the CPU interpreter), dim one
of 16, 32, 64, 128; the kernel must fill out. Correct, and slow: small blocks, and two passes
over the keys (the softmax statistics first, then the weighted sum).
"""

import triton
import triton.language as tl


@triton.jit
def attention_two_pass(q_ptr, k_ptr, v_ptr, out_ptr, seq, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    head = tl.program_id(1).to(tl.int64) * seq * D  # this (batch, head)'s offset
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rd = tl.arange(0, D)
    q = tl.load(q_ptr + head + rm[:, None] * D + rd[None, :], mask=rm[:, None] < seq, other=0.0)
    end = tl.minimum((tl.program_id(0) + 1) * BM, seq)  # causal: no key after the last query
    # pass 1: each row's maximum score and sum of exponentials
    m = tl.full([BM], float("-inf"), tl.float32)
    s = tl.zeros([BM], tl.float32)
    for start in range(0, end, BN):
        rn = start + tl.arange(0, BN)
        k = tl.load(k_ptr + head + rn[:, None] * D + rd[None, :], mask=rn[:, None] < seq, other=0.0)
        scores = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
        scores = tl.where((rn[None, :] <= rm[:, None]) & (rn[None, :] < seq), scores, float("-inf"))
        new_m = tl.maximum(m, tl.max(scores, 1))
        s = s * tl.exp(m - new_m) + tl.sum(tl.exp(scores - new_m[:, None]), 1)
        m = new_m
    # pass 2: the normalised weights times v
    acc = tl.zeros([BM, D], tl.float32)
    for start in range(0, end, BN):
        rn = start + tl.arange(0, BN)
        k = tl.load(k_ptr + head + rn[:, None] * D + rd[None, :], mask=rn[:, None] < seq, other=0.0)
        v = tl.load(v_ptr + head + rn[:, None] * D + rd[None, :], mask=rn[:, None] < seq, other=0.0)
        scores = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
        scores = tl.where((rn[None, :] <= rm[:, None]) & (rn[None, :] < seq), scores, float("-inf"))
        p = tl.exp(scores - m[:, None]) / s[:, None]
        acc += tl.dot(p.to(v.dtype), v).to(tl.float32)
    tl.store(out_ptr + head + rm[:, None] * D + rd[None, :], acc.to(out_ptr.dtype.element_ty), mask=rm[:, None] < seq)


def causal_attention(q, k, v, out):
    batch, heads, seq, dim = q.shape
    grid = (triton.cdiv(seq, 16), batch * heads)
    attention_two_pass[grid](q, k, v, out, seq, dim ** -0.5, D=dim, BM=16, BN=16)
