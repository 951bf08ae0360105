import torch
import torch.nn as nn


class Model(nn.Module):
    """A 1-D convolution with a bias."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x):
        return self.conv(x)


batch_size = 32
in_channels = 24
out_channels = 40
kernel_size = 5
stride = 2
length = 4099


def get_inputs():
    return [torch.randn(batch_size, in_channels, length)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size, stride]
