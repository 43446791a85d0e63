"""What an export needs to know about a generator: the module, its inputs, size rules, metadata."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from gantk.errors import GantkError
from gantk.models.networks import size_multiple
from gantk.nn.layers import has_batchnorm

BN_MODES = ("eval", "batch")


@dataclass
class ExportSpec:
    """A generator ready to export. Images are NCHW in [-1, 1]; `nz` > 0 adds a latent input `z` (N, nz)."""
    net: nn.Module
    family: str = "cyclegan"
    arch: dict = field(default_factory=dict)
    in_channels: int = 3
    out_channels: int = 3
    multiple: int = 4
    nz: int = 0
    bn_mode: str = "none"  # eval: BatchNorm running statistics; batch: per-image statistics; none: no BatchNorm

    @property
    def input_names(self) -> list[str]:
        return ["input", "z"] if self.nz else ["input"]

    def default_size(self) -> int:
        return max(self.multiple, 64)

    def example_inputs(self, batch: int = 1, size: int | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        s = size or self.default_size()
        x = torch.rand(batch, self.in_channels, s, s, generator=g) * 2 - 1
        return (x, torch.randn(batch, self.nz, generator=g)) if self.nz else (x,)

    def metadata(self) -> dict:
        return {"gantk_family": self.family, "gantk_arch": self.arch, "input_range": [-1, 1],
                "output_range": [-1, 1], "layout": "NCHW", "size_multiple": self.multiple,
                "normalization": {"eval": "BatchNorm running statistics", "batch": "per-image statistics "
                                  "(the reference test script's batch statistics at batch size 1)",
                                  "none": "InstanceNorm (per-image statistics)"}[self.bn_mode],
                "bn_mode": self.bn_mode, "nz": self.nz, "precision": "fp32"}


@contextlib.contextmanager
def on_device(net: nn.Module, device):
    """Run a block with `net` (fp32, eval mode) on `device`, then put it back where it was."""
    home = next(net.parameters()).device
    net.to(device).float().eval()
    try:
        yield net
    finally:
        net.to(home)


class _PerImageNorm(nn.Module):
    """BatchNorm's affine parameters with statistics of each image (== batch statistics at batch 1)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.norm = nn.InstanceNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine)
        if bn.affine:
            self.norm.load_state_dict({"weight": bn.weight.detach(), "bias": bn.bias.detach()})

    def forward(self, x):
        return self.norm(x)


def apply_bn_mode(net: nn.Module, bn_mode: str) -> nn.Module:
    """Eval-mode copy-free preparation: 'batch' swaps every BatchNorm2d for per-image statistics
    (what the reference test script computes at its batch size of 1); 'eval' keeps running statistics."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode {bn_mode!r}: expected one of {BN_MODES}")
    if bn_mode == "batch":
        for name, child in list(net.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(net, name, _PerImageNorm(child))
            else:
                apply_bn_mode(child, bn_mode)
    return net.eval()


def spec_for_generator(net: nn.Module, family: str = "cyclegan", bn_mode: str = "eval") -> ExportSpec:
    """An ExportSpec for any gantk generator: define_G and BicycleGAN G (their `arch` attribute says
    what they are; BicycleGAN's adds the latent input z) or the fast-style TransformerNet."""
    from gantk.models.style import TransformerNet
    arch = dict(getattr(net, "arch", {}))
    if isinstance(net, TransformerNet):
        family, arch = "fast_style", {"model": "TransformerNet", "input_nc": 3, "output_nc": 3}
    family = arch.pop("family", family)
    bn = bn_mode if has_batchnorm(net) else "none"
    if bn != "none":
        apply_bn_mode(net, bn)
    net.eval()
    multiple = size_multiple(arch["netG"]) if "netG" in arch else 4
    return ExportSpec(net=net, family=family, arch=arch, in_channels=arch.get("input_nc", 3),
                      out_channels=arch.get("output_nc", 3), multiple=multiple, nz=arch.get("nz", 0), bn_mode=bn)


FAMILIES = ("auto", "cyclegan", "pix2pix", "bicyclegan", "fast_style")


def load_spec(name=None, checkpoints_dir="./checkpoints", epoch="latest", direction="AtoB", which=None,
              weights=None, bn_mode="batch", model="auto", **arch) -> tuple[ExportSpec, str]:
    """(spec, label) for a trained experiment (--name), a generator file (--weights), or, with only
    --netG, a randomly initialised architecture (for pure speed measurements)."""
    from gantk.translate import resolve_generator, saved_options
    given = {k: v for k, v in arch.items() if v is not None}
    if not name and not weights:
        if not given.get("netG"):
            raise GantkError("give --name (a trained experiment), --weights (a generator file) or --netG (random weights)")
        from gantk.models import define_G
        net = define_G(given.get("input_nc", 3), given.get("output_nc", 3), given.get("ngf", 64), given["netG"],
                       norm=given.get("norm", "instance"), use_dropout=not given.get("no_dropout", True))
        return spec_for_generator(net, "random", bn_mode), f"{given['netG']}_random"
    if model == "auto":
        model = saved_options(name, checkpoints_dir).get("model", "auto")
    label = name or Path(weights).stem
    if model in ("bicyclegan", "fast_style"):
        path = Path(weights) if weights else Path(checkpoints_dir) / name / f"{epoch}_net_G.pth"
        if model == "fast_style":
            from gantk.models.style import load_transformer
            return spec_for_generator(load_transformer(path), model), label
        from gantk.models.bicyclegan import load_G
        keys = ("netG", "ngf", "norm", "input_nc", "output_nc")
        net = load_G(path, **{k: given[k] for k in keys if k in given})
        return spec_for_generator(net, model, bn_mode), label
    net, path, saved = resolve_generator(name, checkpoints_dir, epoch, direction, which, weights, **arch)
    family = model if model != "auto" else saved.get("model", "pix2pix" if has_batchnorm(net) else "cyclegan")
    return spec_for_generator(net, family, bn_mode), label
