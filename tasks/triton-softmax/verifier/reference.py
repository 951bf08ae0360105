"""The PyTorch reference of triton-softmax: what the kernel must compute, and the eager
program its speed is compared with."""

import torch


def reference(x):
    return torch.softmax(x, dim=-1)
