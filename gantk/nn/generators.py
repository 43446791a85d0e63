"""ResNet and U-Net generators. Module paths reproduce the reference state-dict keys exactly."""
from __future__ import annotations

import torch
import torch.nn as nn

from gantk.errors import GantkError
from gantk.nn.layers import uses_bias

PADDINGS = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}


def padded_conv(in_c: int, out_c: int, k: int, padding_type: str, bias: bool) -> list[nn.Module]:
    """[pad layer, conv] for 'reflect'/'replicate', or one zero-padded conv for 'zero'."""
    p = k // 2
    if padding_type == "zero":
        return [nn.Conv2d(in_c, out_c, k, padding=p, bias=bias)]
    if padding_type not in PADDINGS:
        raise GantkError(f"padding type {padding_type!r}: expected reflect, replicate or zero")
    return [PADDINGS[padding_type](p), nn.Conv2d(in_c, out_c, k, padding=0, bias=bias)]


def _relu() -> nn.ReLU:
    """The ResNet generator's ReLU. Out of place, unlike the reference's ReLU(True): InstanceNorm returns a
    view, and an in-place op on it makes autograd copy its gradient (measured: 4% of a --kernels winograd
    generator's CPU forward+backward at 256 px, no change in eager); same results, same state dict."""
    return nn.ReLU()


RESNET_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}  # --netG names of the generators: residual blocks
UNET_DOWNS = {"unet_128": 7, "unet_256": 8}                # ... and U-Net down-sampling steps
NETG_NAMES = tuple(RESNET_BLOCKS) + tuple(UNET_DOWNS)


def size_multiple(netG: str) -> int:
    """Input height/width must be a multiple of this for `netG` (4 for ResNet, 2**downs for U-Net)."""
    return 2 ** UNET_DOWNS[netG] if netG in UNET_DOWNS else 4




class ResnetBlock(nn.Module):
    """x + [pad, conv3, norm, relu, (dropout), pad, conv3, norm](x)."""

    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        layers = padded_conv(dim, dim, 3, padding_type, use_bias) + [norm_layer(dim), _relu()]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += padded_conv(dim, dim, 3, padding_type, use_bias) + [norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downs, n_blocks residual blocks, two transposed-conv ups, c7s1 + tanh."""

    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False,
                 n_blocks=6, padding_type="reflect"):
        super().__init__()
        bias = uses_bias(norm_layer)
        model = padded_conv(input_nc, ngf, 7, padding_type, bias) + [norm_layer(ngf), _relu()]
        for i in range(2):
            c = ngf * 2**i
            model += [nn.Conv2d(c, c * 2, 3, stride=2, padding=1, bias=bias), norm_layer(c * 2), _relu()]
        model += [ResnetBlock(ngf * 4, padding_type, norm_layer, use_dropout, bias) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            model += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                      norm_layer(c // 2), _relu()]
        model += padded_conv(ngf, output_nc, 7, padding_type, True) + [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """down -> submodule -> up, with the input concatenated to the output (except outermost)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.outermost = outermost
        bias = uses_bias(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=bias)
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` stride-2 levels: an input of 2**num_downs px reaches 1x1 at the bottom."""

    def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
        super().__init__()
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm_layer=norm_layer, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, norm_layer=norm_layer)

    def forward(self, x):
        return self.model(x)
