"""Johnson et al.'s feed-forward style network as pytorch/examples' fast_neural_style defines it
(TransformerNet: reflect-padded convs, affine InstanceNorm, 5 residual blocks, nearest-upsample + conv
decoder), with that example's module names, so its state dicts load unchanged."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class ConvLayer(nn.Module):
    """[nearest upsampling to a given size], reflection pad k//2, conv; keys `conv2d.*` as in the example."""

    def __init__(self, in_c: int, out_c: int, k: int, stride: int = 1):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(in_c, out_c, k, stride)

    def forward(self, x, size=None):
        if size is not None:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """x + IN(conv(relu(IN(conv(x))))), 3x3 reflect-padded convs, affine InstanceNorm."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class TransformerNet(nn.Module):
    """Images in [-1, 1], NCHW, any size -> stylised images of the same size, about [-1, 1] (not clamped).

    Layout and state-dict keys are those of pytorch/examples' TransformerNet, which works on 0..255
    pixels; the input is mapped to 0..255 and the output back, so its checkpoints load unchanged.
    The decoder upsamples to the encoder's sizes, so odd sizes come back whole (for sizes divisible by 4
    this is the example's 2x nearest upsampling).
    """

    family = "fast_style"

    def __init__(self):
        super().__init__()
        self.arch = {"input_nc": 3, "output_nc": 3}
        self.conv1, self.in1 = ConvLayer(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3 = ResidualBlock(128), ResidualBlock(128), ResidualBlock(128)
        self.res4, self.res5 = ResidualBlock(128), ResidualBlock(128)
        self.deconv1, self.in4 = ConvLayer(128, 64, 3), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = ConvLayer(64, 32, 3), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9)

    def forward(self, x):
        y1 = F.relu(self.in1(self.conv1((x + 1) * 127.5)))
        y2 = F.relu(self.in2(self.conv2(y1)))
        y = F.relu(self.in3(self.conv3(y2)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = F.relu(self.in4(self.deconv1(y, y2.shape[-2:])))
        y = F.relu(self.in5(self.deconv2(y, y1.shape[-2:])))
        return self.deconv3(y) / 127.5 - 1
