"""The PyTorch reference of triton-causal-attention: what the kernel must compute, and the
eager program its speed is compared with (the textbook formula, not SDPA's fused kernels)."""

import torch


def reference(q, k, v):
    seq = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    future = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
    return weights.to(q.dtype) @ v
