"""`define_G` / `define_D` factories by the reference names."""
from __future__ import annotations

import torch.nn as nn

from gantk.errors import GantkError
from gantk.nn import (NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator,
                      get_norm_layer, init_weights)

RESNET_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}
UNET_DOWNS = {"unet_128": 7, "unet_256": 8}
NETG_NAMES = tuple(RESNET_BLOCKS) + tuple(UNET_DOWNS)
NETD_NAMES = ("basic", "n_layers", "pixel")


def size_multiple(netG: str) -> int:
    """Input height/width must be a multiple of this for `netG` (4 for ResNet, 2**downs for U-Net)."""
    return 2 ** UNET_DOWNS[netG] if netG in UNET_DOWNS else 4


def define_G(input_nc: int, output_nc: int, ngf: int, netG: str, norm: str = "batch",
             use_dropout: bool = False, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """A generator by reference name, weights initialised N(0, init_gain) by default."""
    norm_layer = get_norm_layer(norm)
    if netG in RESNET_BLOCKS:
        net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer, use_dropout, n_blocks=RESNET_BLOCKS[netG])
    elif netG in UNET_DOWNS:
        net = UnetGenerator(input_nc, output_nc, UNET_DOWNS[netG], ngf, norm_layer, use_dropout)
    else:
        raise GantkError(f"--netG {netG!r}: expected one of {', '.join(NETG_NAMES)}")
    net.arch = dict(input_nc=input_nc, output_nc=output_nc, ngf=ngf, netG=netG, norm=norm, use_dropout=use_dropout)
    return init_weights(net, init_type, init_gain)


def define_D(input_nc: int, ndf: int, netD: str, n_layers_D: int = 3, norm: str = "batch",
             init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """A PatchGAN discriminator: 'basic' (70x70, n_layers=3), 'n_layers' (n_layers_D) or 'pixel' (1x1)."""
    norm_layer = get_norm_layer(norm)
    if netD == "basic":
        net = NLayerDiscriminator(input_nc, ndf, 3, norm_layer)
    elif netD == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_layer)
    elif netD == "pixel":
        net = PixelDiscriminator(input_nc, ndf, norm_layer)
    else:
        raise GantkError(f"--netD {netD!r}: expected one of {', '.join(NETD_NAMES)}")
    return init_weights(net, init_type, init_gain)
