"""The PyTorch reference of triton-rmsnorm: what the kernel must compute, and the eager
program its speed is compared with."""

import torch


def reference(x, weight, eps):
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(acc)).to(x.dtype)
