"""What an export needs to know about a generator: the module, its inputs, size rules, metadata."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from gantk.errors import GantkError
from gantk.nn.generators import size_multiple
from gantk.nn.inference import BN_MODES, prepare_for_inference


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


def spec_for_generator(net: nn.Module, family: str | None = None, bn_mode: str = "eval") -> ExportSpec:
    """An ExportSpec for any gantk generator: its `arch` says what it is (channels, U-Net depth, BicycleGAN's
    latent input z), its `family` where it has one (default: `family`, else cyclegan). Sets the inference
    mode: BatchNorm per-image ('batch') or running ('eval') statistics, dropout off."""
    arch = dict(getattr(net, "arch", {}))
    family = family or getattr(net, "family", "cyclegan")
    if bn_mode not in BN_MODES:
        raise GantkError(f"--bn_mode {bn_mode!r}: expected one of {', '.join(BN_MODES)}")
    bn = prepare_for_inference(net, eval_mode=bn_mode == "eval", dropout=False, per_image=True).inference["bn_mode"]
    multiple = size_multiple(arch["netG"]) if "netG" in arch else 4
    return ExportSpec(net=net, family=family, arch=arch, in_channels=arch.get("input_nc", 3),
                      out_channels=arch.get("output_nc", 3), multiple=multiple, nz=arch.get("nz", 0), bn_mode=bn)


def load_spec(name=None, checkpoints_dir="./checkpoints", epoch="latest", direction="AtoB", which=None,
              weights=None, bn_mode="batch", model="auto", **arch) -> tuple[ExportSpec, str]:
    """(spec, label) for a trained experiment (--name), a generator file (--weights), or, with only
    --netG, a randomly initialised architecture (for pure speed measurements)."""
    from gantk.models import get_family, load
    if not name and not weights:
        if not arch.get("netG"):
            raise GantkError("give --name (a trained experiment), --weights (a generator file) or --netG (random weights)")
        kind = get_family("cyclegan").generator
        net = kind.build(**{**get_family("cyclegan").default_arch("G"), **kind.options(arch, "G")})
        return spec_for_generator(net, "random", bn_mode), f"{arch['netG']}_random"
    loaded = load(name, checkpoints_dir, epoch, direction, which, weights, model, **arch)
    if not loaded.family.exportable:
        raise GantkError(f"{loaded.path}: {loaded.family.name} networks are not exported (no image-to-image generator)")
    return spec_for_generator(loaded.net, loaded.family.name, bn_mode), name or Path(weights).stem
