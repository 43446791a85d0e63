"""nn.Module faces of the fused ops, made from the modules they replace (same Parameters): exports record
the plain modules' ops."""
from __future__ import annotations

import torch.nn as nn

from gantk.kernels.instance_norm import instance_norm_act
from gantk.kernels.reflect_conv import reflect_pad_conv2d
from gantk.kernels.runtime import exporting


class ReflectPadConv2d(nn.Conv2d):
    """Conv2d with reflect padding folded into the kernel's indexing (no padded copy)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, padding: int) -> "ReflectPadConv2d":
        """A module sharing `conv`'s Parameters, preceded by ReflectionPad2d(padding)."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=padding,
                  bias=conv.bias is not None, padding_mode="reflect", device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def _conv_forward(self, x, weight, bias):
        if exporting():  # F.pad(reflect) + conv, as the unpatched pair
            return super()._conv_forward(x, weight, bias)
        return reflect_pad_conv2d(x, weight, bias, self.padding[0], self.stride[0])


class InstanceNormAct(nn.Module):
    """InstanceNorm2d (+ affine) fused with an activation; forward(x, residual) also adds a residual.
    `inplace` (set where the input is a fresh map nothing else reads, such as the output of the conv before it
    in a Sequential): without autograd, the result overwrites the input (see `instance_norm_act`)."""

    inplace = False

    def __init__(self, norm: nn.InstanceNorm2d, activation: str = "none", negative_slope: float = 0.2):
        super().__init__()
        self.num_features, self.eps, self.affine = norm.num_features, norm.eps, norm.affine
        self.register_parameter("weight", norm.weight)  # the same Parameters (None without affine)
        self.register_parameter("bias", norm.bias)
        self.activation, self.negative_slope = activation, negative_slope

    def forward(self, x, residual=None):
        return instance_norm_act(x, self.weight, self.bias, self.eps, self.activation, self.negative_slope, residual,
                                 self.inplace)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, affine={self.affine}, activation={self.activation}"
                + ", inplace=True" * self.inplace)
