"""VGG19 features with torchvision's state-dict keys, for style and perceptual losses; Gram matrices.

torchvision is not needed: the network is defined here and its weights come from a file the user
gives (torchvision's `vgg19-dcbb9e9d.pth`, classifier keys ignored).
"""
from __future__ import annotations

import logging
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.checkpoints import load_state_dict_checked, read_checkpoint
from gantk.errors import GantkError
from gantk.nn.weights import RANDOM_WEIGHTS, resolve_weights, seeded_random_init

log = logging.getLogger("gantk.vgg")

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
WEIGHTS_ENV = "GANTK_VGG19"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_indices(cfg=VGG19_CFG) -> dict[str, int]:
    """Paper names -> `features` indices: conv1_1 -> 0, relu1_1 -> 1, ..., pool1 -> 4, conv2_1 -> 5, ..."""
    names, i, block, conv = {}, 0, 1, 1
    for v in cfg:
        if v == "M":
            names[f"pool{block}"] = i
            i, block, conv = i + 1, block + 1, 1
        else:
            names[f"conv{block}_{conv}"], names[f"relu{block}_{conv}"] = i, i + 1
            i, conv = i + 2, conv + 1
    return names


LAYERS = layer_indices()


def check_layers(names: Iterable[str], option: str = "layer") -> list[str]:
    """The names as a list; a one-line error for a name VGG19 does not have."""
    names = list(names)
    for n in names:
        if n not in LAYERS:
            raise GantkError(f"{option} {n!r}: not a VGG19 layer; use names like conv1_1, relu4_2, pool3")
    if not names:
        raise GantkError(f"{option}: give at least one VGG19 layer")
    return names


def min_input_size(names: Iterable[str]) -> int:
    """Smallest image side (px) that still leaves 1 px at the deepest of these layers."""
    deepest = max(LAYERS[n] for n in names)
    return 2 ** sum(1 for n, i in LAYERS.items() if n.startswith("pool") and i < deepest)


class VGG19(nn.Module):
    """torchvision's vgg19 `features` (keys features.0.weight ... features.34.bias), with ReLUs that are
    not in place so that conv outputs (pre-ReLU) can be tapped as well as relu outputs."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> ImageNet-normalised input."""
        return ((x + 1) / 2 - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised input -> images in [-1, 1] (not clamped)."""
        return (x * self.std + self.mean) * 2 - 1

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of the named layers for ImageNet-normalised `x`; stops at the deepest one."""
        want = {n: LAYERS[n] for n in layers}
        keep, out = set(want.values()), {}
        for i, layer in enumerate(self.features[: max(keep) + 1]):
            x = layer(x)
            if i in keep:
                out[i] = x
        return {n: out[i] for n, i in want.items()}


def resolve_vgg_weights(weights: str | None, option: str = "--vgg-weights") -> str:
    """The weights file from `weights`, else $GANTK_VGG19; a one-line error saying how to get it."""
    return resolve_weights(weights, option, WEIGHTS_ENV, VGG19_URL, "VGG19 weights")


def load_vgg19(weights: str | None = None, device="cpu", option: str = "--vgg-weights") -> VGG19:
    """A frozen VGG19 in eval mode from torchvision's file (or $GANTK_VGG19). `weights="random"` is a
    test/debug switch: seeded random weights, no file needed, style results meaningless."""
    source = resolve_vgg_weights(weights, option)
    net = VGG19()
    if source == RANDOM_WEIGHTS:
        log.warning("VGG19 is randomly initialised (test/debug switch %r): style results are meaningless",
                    RANDOM_WEIGHTS)
        seeded_random_init(net, "fan_out")  # torchvision's init
    else:
        sd = {k: v for k, v in read_checkpoint(source).items() if not k.startswith("classifier.")}
        if sd and not any(k.startswith("features.") for k in sd):  # a saved `features` Sequential alone
            sd = {f"features.{k}": v for k, v in sd.items()}
        load_state_dict_checked(net, sd, source, f" (expected torchvision's VGG19: {VGG19_URL})")
    return net.eval().requires_grad_(False).to(device)


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features -> (N, C, C) Gram matrices / (C*H*W), in fp32 (size-independent)."""
    n, c, h, w = f.shape
    f = f.float().reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def content_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of features (fp32)."""
    return F.mse_loss(f.float(), target.float())


def style_loss(feats: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the target layers of the mean squared Gram difference; a (1, C, C) target serves a batch."""
    total = 0.0
    for name, target in target_grams.items():
        g = gram_matrix(feats[name])
        total = total + F.mse_loss(g, target.expand_as(g))
    return total
