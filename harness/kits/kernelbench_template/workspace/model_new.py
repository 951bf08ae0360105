"""Write ModelNew here: the same constructor arguments and output as model.Model, with the work
done by Triton kernels (see the instruction). It starts as Model itself, in PyTorch."""

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import triton  # noqa: F401
import triton.language as tl  # noqa: F401

from model import Model


class ModelNew(Model):
    pass
