"""Causal attention in Triton, flash-attention style: one pass over the keys with an online
softmax (running max and sum, in base 2), q kept in registers, tensor-core dots with float32
accumulation, and masks only on the diagonal block (the blocks before it are all visible)."""

import os

import triton
import triton.language as tl


@triton.jit
def attention_block(acc, m, s, q, k_tile, v_tile, rm, start, seq, qk_scale, D: tl.constexpr, BN: tl.constexpr,
                    MASKED: tl.constexpr):
    rn = start + tl.arange(0, BN)
    k = tl.load(k_tile + start * D, mask=rn[:, None] < seq, other=0.0)
    v = tl.load(v_tile + start * D, mask=rn[:, None] < seq, other=0.0)
    scores = tl.dot(q, tl.trans(k)) * qk_scale
    if MASKED:
        scores = tl.where((rn[None, :] <= rm[:, None]) & (rn[None, :] < seq), scores, float("-inf"))
    new_m = tl.maximum(m, tl.max(scores, 1))
    alpha = tl.exp2(m - new_m)
    p = tl.exp2(scores - new_m[:, None])
    s = s * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, new_m, s


@triton.jit
def flash_attention(q_ptr, k_ptr, v_ptr, out_ptr, seq, qk_scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    head = tl.program_id(1).to(tl.int64) * seq * D
    first = tl.program_id(0) * BM
    rm = first + tl.arange(0, BM)
    rd = tl.arange(0, D)
    q = tl.load(q_ptr + head + rm[:, None] * D + rd[None, :], mask=rm[:, None] < seq, other=0.0)
    k_tile = k_ptr + head + tl.arange(0, BN)[:, None] * D + rd[None, :]
    v_tile = v_ptr + head + tl.arange(0, BN)[:, None] * D + rd[None, :]
    m = tl.full([BM], float("-inf"), tl.float32)
    s = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    # key blocks wholly before this query block: nothing masked
    for start in range(0, first // BN * BN, BN):
        acc, m, s = attention_block(acc, m, s, q, k_tile, v_tile, rm, start, seq, qk_scale, D, BN, False)
    # the blocks that cross the diagonal
    for start in range(first // BN * BN, tl.minimum(first + BM, seq), BN):
        acc, m, s = attention_block(acc, m, s, q, k_tile, v_tile, rm, start, seq, qk_scale, D, BN, True)
    out = acc / s[:, None]
    tl.store(out_ptr + head + rm[:, None] * D + rd[None, :], out.to(out_ptr.dtype.element_ty), mask=rm[:, None] < seq)


def causal_attention(q, k, v, out):
    batch, heads, seq, dim = q.shape
    qk_scale = dim ** -0.5 * 1.4426950408889634  # log2(e): exp2 in place of exp
    if os.environ.get("TRITON_INTERPRET") == "1":  # the CPU interpreter: small blocks
        bm, bn, warps, stages = 16, 16, 4, 1
    elif dim <= 64:
        bm, bn, warps, stages = 128, 64, 4, 3
    else:
        bm, bn, warps, stages = 128, 32, 8, 2
    grid = (triton.cdiv(seq, bm), batch * heads)
    flash_attention[grid](q, k, v, out, seq, qk_scale, D=dim, BM=bm, BN=bn, num_warps=warps, num_stages=stages)
