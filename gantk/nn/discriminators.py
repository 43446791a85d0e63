"""PatchGAN discriminators (reference key layout: `model.{0,2,5,8,11}` for n_layers=3)."""
from __future__ import annotations

import torch.nn as nn

from gantk.nn.layers import uses_bias


NETD_NAMES = ("basic", "n_layers", "pixel")  # --netD names


class NLayerDiscriminator(nn.Module):
    """PatchGAN: n_layers stride-2 4x4 convs, one stride-1 conv, a 1-channel logit map (70x70 RF at n=3)."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d, bias: bool | None = None):
        super().__init__()
        bias = uses_bias(norm_layer) if bias is None else bias  # BicycleGAN's PatchGANs always use biases
        seq = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                    norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: classifies every pixel independently."""

    def __init__(self, input_nc, ndf=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        bias = uses_bias(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=bias), norm_layer(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1, bias=bias))

    def forward(self, x):
        return self.net(x)
