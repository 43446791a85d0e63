"""BicycleGAN building blocks (Zhu et al. 2017): U-Nets that take a latent z, the ResNet/conv encoders
E(B) -> (mu, logvar), and the multi-scale PatchGAN. Module paths reproduce the reference state-dict
keys (`model.down.*`/`model.submodule.*`, `conv.*`/`fc.*`/`fcVar.*`, `model_0`/`model_1`).

Unlike the pix2pix U-Net, every conv here carries a bias, the skip is concatenated after the block's
output, and `norm_layer=None` (norm 'none') leaves the norm layers out instead of using Identity.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from gantk.errors import GantkError
from gantk.nn.discriminators import NLayerDiscriminator

NONLINEARITIES = {"relu": functools.partial(nn.ReLU, inplace=True),
                  "lrelu": functools.partial(nn.LeakyReLU, negative_slope=0.2, inplace=True),
                  "elu": functools.partial(nn.ELU, inplace=True)}
UPSAMPLES = ("basic", "bilinear")


def get_nl_layer(nl: str = "relu"):
    """A constructor for the non-linearity 'relu' | 'lrelu' (slope 0.2) | 'elu'."""
    if nl not in NONLINEARITIES:
        raise GantkError(f"--nl {nl!r}: expected one of {', '.join(NONLINEARITIES)}")
    return NONLINEARITIES[nl]


def tile_z(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """cat(x, z broadcast over x's height and width) along channels; z is (N, nz)."""
    z_img = z.view(z.size(0), z.size(1), 1, 1).expand(z.size(0), z.size(1), x.size(2), x.size(3))
    return torch.cat([x, z_img.to(x.dtype)], 1)


def upsample_layers(in_c: int, out_c: int, upsample: str) -> list[nn.Module]:
    """x2 upsampling: 'basic' ConvTranspose2d(4, 2, 1), or 'bilinear' resize + reflect-padded 3x3 conv."""
    if upsample == "basic":
        return [nn.ConvTranspose2d(in_c, out_c, 4, stride=2, padding=1)]
    if upsample == "bilinear":
        return [nn.Upsample(scale_factor=2, mode="bilinear"), nn.ReflectionPad2d(1), nn.Conv2d(in_c, out_c, 3)]
    raise GantkError(f"--upsample {upsample!r}: expected one of {', '.join(UPSAMPLES)}")


def unet_block_layers(input_nc, outer_nc, inner_nc, outermost=False, innermost=False, norm_layer=None,
                      nl_layer=nn.ReLU, use_dropout=False, upsample="basic") -> tuple[list, list]:
    """(down, up) layer lists of one U-Net level; the submodule (if any) sits between them."""
    norm = (lambda c: [norm_layer(c)]) if norm_layer is not None else (lambda c: [])
    downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1)
    if outermost:
        return [downconv], [nl_layer()] + upsample_layers(inner_nc * 2, outer_nc, upsample) + [nn.Tanh()]
    down = [nn.LeakyReLU(0.2, True), downconv]
    if innermost:
        return down, [nl_layer()] + upsample_layers(inner_nc, outer_nc, upsample) + norm(outer_nc)
    up = [nl_layer()] + upsample_layers(inner_nc * 2, outer_nc, upsample) + norm(outer_nc)
    return down + norm(inner_nc), up + ([nn.Dropout(0.5)] if use_dropout else [])


def unet_levels(num_downs: int, ngf: int) -> list[tuple[int, int, int, bool]]:
    """(input_nc, outer_nc, inner_nc, dropout-eligible) from the innermost level outwards, without the outermost."""
    if num_downs < 5:
        raise GantkError(f"a U-Net needs at least 5 downsamplings, got {num_downs}")
    deep = [(ngf * 8, ngf * 8, ngf * 8, i > 0) for i in range(num_downs - 4)]
    return deep + [(ngf * 4, ngf * 4, ngf * 8, False), (ngf * 2, ngf * 2, ngf * 4, False), (ngf, ngf, ngf * 2, False)]


class UnetBlock(nn.Module):
    """One level as a Sequential (keys `model.N`): down -> submodule -> up, output cat(up, x)."""

    def __init__(self, input_nc, outer_nc, inner_nc, submodule=None, outermost=False, innermost=False, **kw):
        super().__init__()
        self.outermost = outermost
        down, up = unet_block_layers(input_nc, outer_nc, inner_nc, outermost, innermost, **kw)
        self.model = nn.Sequential(*down, *([submodule] if submodule is not None else []), *up)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([self.model(x), x], 1)


class UnetBlockWithZ(nn.Module):
    """One level that sees z: down(cat(x, z)) -> submodule(., z) -> up, output cat(up, x)."""

    def __init__(self, input_nc, outer_nc, inner_nc, nz=0, submodule=None, outermost=False, innermost=False, **kw):
        super().__init__()
        self.outermost, self.nz = outermost, nz
        down, up = unet_block_layers(input_nc + nz, outer_nc, inner_nc, outermost, innermost, **kw)
        self.down = nn.Sequential(*down)
        self.submodule = submodule
        self.up = nn.Sequential(*up)

    def forward(self, x, z):
        h = self.down(tile_z(x, z) if self.nz > 0 else x)
        if self.submodule is not None:
            h = self.submodule(h, z)
        h = self.up(h)
        return h if self.outermost else torch.cat([h, x], 1)


def nested_unet(make_block, num_downs: int, ngf: int, use_dropout: bool) -> nn.Module:
    """All levels but the outermost, innermost first; make_block(input_nc, outer_nc, inner_nc, submodule,
    innermost=..., use_dropout=...) builds one level. Dropout goes on the deep levels below the innermost."""
    block = None
    for in_c, out_c, inner, deep in unet_levels(num_downs, ngf):
        block = make_block(in_c, out_c, inner, block, innermost=block is None, use_dropout=use_dropout and deep)
    return block


class GUnetAddInput(nn.Module):
    """U-Net generator with z tiled and concatenated to the input image only (`G_Unet_add_input`)."""

    def __init__(self, input_nc, output_nc, nz, num_downs, ngf=64, norm_layer=None, nl_layer=nn.ReLU,
                 use_dropout=False, upsample="basic"):
        super().__init__()
        self.nz = nz
        kw = dict(norm_layer=norm_layer, nl_layer=nl_layer, upsample=upsample)
        inner = nested_unet(functools.partial(UnetBlock, **kw), num_downs, ngf, use_dropout)
        self.model = UnetBlock(input_nc + nz, output_nc, ngf, inner, outermost=True, **kw)

    def forward(self, x, z=None):
        return self.model(tile_z(x, z) if self.nz > 0 else x)


class GUnetAddAll(nn.Module):
    """U-Net generator with z concatenated to the input of every down block (`G_Unet_add_all`)."""

    def __init__(self, input_nc, output_nc, nz, num_downs, ngf=64, norm_layer=None, nl_layer=nn.ReLU,
                 use_dropout=False, upsample="basic"):
        super().__init__()
        self.nz = nz
        kw = dict(norm_layer=norm_layer, nl_layer=nl_layer, upsample=upsample)
        make = lambda i, o, n, sub, **k: UnetBlockWithZ(i, o, n, nz, sub, **k, **kw)
        self.model = UnetBlockWithZ(input_nc, output_nc, ngf, nz, nested_unet(make, num_downs, ngf, use_dropout),
                                    outermost=True, **kw)

    def forward(self, x, z):
        return self.model(x, z)


class BasicBlock(nn.Module):
    """Pre-activation residual block that halves the resolution: [norm, nl, conv3, norm, nl, conv3 + avgpool]
    plus a shortcut [avgpool, conv1x1]."""

    def __init__(self, inplanes, outplanes, norm_layer=None, nl_layer=nn.LeakyReLU):
        super().__init__()
        norm = (lambda c: [norm_layer(c)]) if norm_layer is not None else (lambda c: [])
        self.conv = nn.Sequential(
            *norm(inplanes), nl_layer(), nn.Conv2d(inplanes, inplanes, 3, padding=1),
            *norm(inplanes), nl_layer(),
            nn.Sequential(nn.Conv2d(inplanes, outplanes, 3, padding=1), nn.AvgPool2d(2, 2)))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(inplanes, outplanes, 1))

    def forward(self, x):
        return self.conv(x) + self.shortcut(x)


class Encoder(nn.Module):
    """conv trunk -> 8x8 average pool -> fc (mu) and, if vaeLike, fcVar (log-variance)."""

    def __init__(self, conv: list[nn.Module], features: int, output_nc: int, vaeLike: bool):
        super().__init__()
        self.vaeLike = vaeLike
        self.conv = nn.Sequential(*conv, nn.AvgPool2d(8))
        self.fc = nn.Sequential(nn.Linear(features, output_nc))
        if vaeLike:
            self.fcVar = nn.Sequential(nn.Linear(features, output_nc))

    def forward(self, x):
        h = self.conv(x).flatten(1)
        return (self.fc(h), self.fcVar(h)) if self.vaeLike else self.fc(h)


class EResNet(Encoder):
    """ResNet encoder (`E_ResNet`): a stride-2 conv, n_blocks - 1 BasicBlocks (width ndf * min(4, n))."""

    def __init__(self, input_nc=3, output_nc=8, ndf=64, n_blocks=4, norm_layer=None, nl_layer=nn.LeakyReLU,
                 vaeLike=False):
        conv = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1)]
        widths = [ndf * min(4, n) for n in range(1, n_blocks + 1)]
        conv += [BasicBlock(a, b, norm_layer, nl_layer) for a, b in zip(widths, widths[1:])]
        super().__init__(conv + [nl_layer()], widths[-1], output_nc, vaeLike)
        self._modules["conv"] = self._modules.pop("conv")  # the reference lists fc, fcVar, conv in this order


class ENLayers(Encoder):
    """Plain conv encoder (`E_NLayers`): n_layers stride-2 4x4 convs (width ndf * min(2**n, 4))."""

    def __init__(self, input_nc, output_nc=8, ndf=64, n_layers=4, norm_layer=None, nl_layer=nn.LeakyReLU,
                 vaeLike=False):
        conv = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nl_layer()]
        width = ndf
        for n in range(1, n_layers):
            prev, width = width, ndf * min(2**n, 4)
            conv += [nn.Conv2d(prev, width, 4, stride=2, padding=1)]
            conv += ([norm_layer(width)] if norm_layer is not None else []) + [nl_layer()]
        super().__init__(conv, width, output_nc, vaeLike)


class DNLayersMulti(nn.Module):
    """num_D PatchGANs on an image pyramid (3x3 average pooling, stride 2); the i-th has ndf / 2**i
    filters. Returns one prediction map per scale (a list), or a tensor when num_D == 1."""

    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d, num_D=1):
        super().__init__()
        self.num_D = num_D
        patch = lambda nf: NLayerDiscriminator(input_nc, nf, n_layers, norm_layer, bias=True).model
        if num_D == 1:
            self.model = patch(ndf)
            return
        for i in range(num_D):
            self.add_module(f"model_{i}", patch(int(round(ndf / 2**i))))
        self.down = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        if self.num_D == 1:
            return self.model(x)
        out = []
        for i in range(self.num_D):
            out.append(getattr(self, f"model_{i}")(x))
            if i < self.num_D - 1:
                x = self.down(x)
        return out
