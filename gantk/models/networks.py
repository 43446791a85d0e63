"""`define_G` / `define_D` factories by the reference names."""
from __future__ import annotations

import torch.nn as nn

from gantk.errors import GantkError
from gantk.nn import (NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator,
                      get_norm_layer, init_weights)
from gantk.nn.discriminators import NETD_NAMES
from gantk.nn.generators import NETG_NAMES, RESNET_BLOCKS, UNET_DOWNS



G_ARCH = ("input_nc", "output_nc", "ngf", "netG", "norm", "use_dropout")


def arch_options(options: dict, keys: tuple[str, ...]) -> dict:
    """The factory arguments `keys` among training options (CLI names; only those present): --no_dropout
    gives use_dropout."""
    out = {k: options[k] for k in keys if k in options and options[k] is not None}
    if "use_dropout" in keys and options.get("no_dropout") is not None:
        out["use_dropout"] = not options["no_dropout"]
    return out


def g_options(options: dict, which: str = "G") -> dict:
    """define_G arguments among training options; CycleGAN's G_B maps domain B (output_nc) to A."""
    out = arch_options(options, G_ARCH)
    if which == "G_B":
        swap = {"input_nc": "output_nc", "output_nc": "input_nc"}
        out = {swap.get(k, k): v for k, v in out.items()}
    return out


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
