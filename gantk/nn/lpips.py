"""LPIPS (Zhang et al. 2018, v0.1): a learned perceptual distance between images in [-1, 1].

distance(x, y) = sum over 5 backbone layers l of mean over pixels of w_l . (f_l(x) - f_l(y))^2, with f_l the
layer's activations unit-normalised over channels and w_l a published non-negative 1x1 linear head. The
backbones are torchvision's AlexNet ('alex') and VGG16 ('vgg') `features`, defined here with torchvision's keys
(`features.0.weight`, ...), so `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth` load unchanged (classifier
keys ignored). The heads carry the keys of the PerceptualSimilarity `lpips` package's `weights/v0.1/<net>.pth`
(`lin0.model.1.weight` ... `lin4.model.1.weight`). Nothing is downloaded: both files are given by the user;
`"random"` for both is a seeded test/debug switch (distances meaningless).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from gantk.checkpoints import load_state_dict_checked, read_checkpoint
from gantk.errors import GantkError
from gantk.nn.weights import RANDOM_WEIGHTS, resolve_weights, seeded_random_init

log = logging.getLogger("gantk.lpips")

HEADS_ENV, BACKBONE_ENV = "GANTK_LPIPS", "GANTK_LPIPS_BACKBONE"
HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"
# the published input scaling (images in [-1, 1] -> roughly ImageNet-normalised): (x - SHIFT) / SCALE
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
EPS = 1e-10  # added to the channel norm before dividing


@dataclass(frozen=True)
class Backbone:
    """A torchvision `features` chain: convs (out channels, kernel, stride, padding) and max pools "M"
    (kernel, stride `pool`), each conv followed by a ReLU; `taps` are the indices of the five ReLUs LPIPS reads."""
    convs: tuple
    pool: tuple[int, int]
    taps: tuple[int, ...]
    url: str
    min_size: int  # smallest image side (px) that still reaches the last tap


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
NETS = {
    "alex": Backbone(((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)),
                     (3, 2), (1, 4, 7, 9, 11), "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", 31),
    "vgg": Backbone(tuple(v if v == "M" else (v, 3, 1, 1) for v in _VGG16), (2, 2), (3, 8, 15, 22, 29),
                    "https://download.pytorch.org/models/vgg16-397923af.pth", 16),
}


def build_features(spec: Backbone) -> nn.Sequential:
    """torchvision's `features` up to the last tapped ReLU (the layer indices are the state-dict keys)."""
    layers, c = [], 3
    for v in spec.convs:
        if v == "M":
            layers.append(nn.MaxPool2d(*spec.pool))
        else:
            layers += [nn.Conv2d(c, v[0], *v[1:]), nn.ReLU()]
            c = v[0]
    return nn.Sequential(*layers[: spec.taps[-1] + 1])


class BackboneNet(nn.Module):
    """Keys `features.N.weight/bias` as in torchvision; forward: the five tapped activations."""

    def __init__(self, spec: Backbone):
        super().__init__()
        self.features, self.taps = build_features(spec), spec.taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LinearHead(nn.Module):
    """The published `NetLinLayer`: dropout (inactive in eval mode) then a 1x1 conv to 1 channel, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


class Heads(nn.Module):
    """lin0 ... lin4: keys `lin<i>.model.1.weight` of shape (1, C_i, 1, 1), as in the published files."""

    def __init__(self, channels: list[int]):
        super().__init__()
        for i, c in enumerate(channels):
            setattr(self, f"lin{i}", LinearHead(c))

    def __iter__(self):
        return iter(self.children())


def unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """Each pixel's channel vector divided by its L2 norm (+ EPS)."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 with backbone `net` ('alex' or 'vgg'): forward(x, y) -> (N,) distances of NCHW images
    in [-1, 1]; 0 for identical images, symmetric."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise GantkError(f"--lpips-net {net!r}: expected one of {', '.join(NETS)}")
        self.net, self.spec = net, NETS[net]
        self.backbone = BackboneNet(self.spec)
        self.heads = Heads([self.backbone.features[i - 1].out_channels for i in self.spec.taps])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped activations of images in [-1, 1], each unit-normalised over channels."""
        if min(x.shape[-2:]) < self.spec.min_size:
            raise GantkError(f"LPIPS ({self.net}) needs images of at least {self.spec.min_size} px a side, "
                             f"got {tuple(x.shape[-2:])}")
        return [unit_normalize(f) for f in self.backbone((x - self.shift) / self.scale)]

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """(N,) distances from two lists of unit-normalised features: sum over layers of the spatial mean of
        the head applied to the squared difference."""
        return sum(head((a - b) ** 2).mean((1, 2, 3)) for head, a, b in zip(self.heads, fx, fy))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise GantkError(f"LPIPS: images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        return self.distance(self.features(x), self.features(y))


def resolve_lpips_weights(heads: str | None, backbone: str | None, net: str = "alex") -> tuple[str, str]:
    """(heads file, backbone file) from the options, else $GANTK_LPIPS / $GANTK_LPIPS_BACKBONE, or "random";
    a one-line error naming the missing option and where to get the file."""
    if net not in NETS:
        raise GantkError(f"--lpips-net {net!r}: expected one of {', '.join(NETS)}")
    return (resolve_weights(heads, "--lpips-weights", HEADS_ENV, HEADS_URL.format(net=net),
                            f"LPIPS v0.1 linear heads ({net})"),
            resolve_weights(backbone, "--lpips-backbone", BACKBONE_ENV, NETS[net].url,
                            f"LPIPS backbone (torchvision {net})"))


def lpips_requested(heads: str | None, backbone: str | None) -> bool:
    """Whether the user asked for LPIPS: an option or environment variable names a weights file."""
    return bool(heads or backbone or os.environ.get(HEADS_ENV) or os.environ.get(BACKBONE_ENV))


def _seeded_random(net: LPIPS) -> None:
    def heads():  # non-negative like the published heads
        for head in net.heads:
            nn.init.uniform_(head.model[1].weight, 0, 2 / head.model[1].in_channels)
    seeded_random_init(net.backbone, "fan_out", heads)  # torchvision's init for the backbone


def load_lpips(net: str = "alex", heads: str | None = None, backbone: str | None = None, device="cpu") -> LPIPS:
    """A frozen LPIPS in eval mode: backbone from torchvision's file, heads from the published v0.1 file
    (or the environment); `"random"` for either: seeded random weights for tests (distances meaningless)."""
    heads, backbone = resolve_lpips_weights(heads, backbone, net)
    model = LPIPS(net)
    if RANDOM_WEIGHTS in (heads, backbone):
        log.warning("LPIPS is (partly) randomly initialised (test switch %r): distances are meaningless",
                    RANDOM_WEIGHTS)
        _seeded_random(model)
    if backbone != RANDOM_WEIGHTS:
        sd = {k: v for k, v in read_checkpoint(backbone).items() if not k.startswith("classifier.")}
        load_state_dict_checked(model.backbone, sd, backbone,
                                f" (expected torchvision's {net} weights for --lpips-net {net}: {NETS[net].url})")
    if heads != RANDOM_WEIGHTS:
        load_state_dict_checked(model.heads, read_checkpoint(heads), heads,
                                f" (expected the LPIPS v0.1 {net} heads: {HEADS_URL.format(net=net)})")
    return model.eval().requires_grad_(False).to(device)
