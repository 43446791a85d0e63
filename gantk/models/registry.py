"""The one family registry: per model family its options and training class, how its networks are built
from an architecture (`arch`) and from training options, what the translate command does with it, and
whether it exports. `gantk train`, translate, export and bench read this table."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from gantk.errors import GantkError


@dataclass(frozen=True)
class NetKind:
    """How one network of a family is made: `build(**arch)`; `options(training options, which) -> arch`
    (only the keys present); `describe(state dict) -> arch` guessed from a foreign file's keys and shapes."""
    build: Callable[..., nn.Module]
    options: Callable[[dict, str], dict]
    describe: Callable[[dict], dict] = lambda sd: {}


@dataclass(frozen=True)
class Family:
    name: str
    summary: str                    # one line for `gantk train --help`
    model: str                      # "module:Class" of the training class (imported on first use)
    generator: NetKind
    generators: tuple[str, ...] = ("G",)   # network names of the generators: (AtoB, BtoA) for CycleGAN
    encoder: NetKind | None = None         # BicycleGAN's E
    inference: str = "translate"    # what `gantk translate` does: translate (one output), sample (several z), none
    scoring: str | None = None      # how --eval_freq scores the held-out split: paired (vs targets), cycle, None
    exportable: bool = True

    @property
    def model_class(self):
        module, cls = self.model.split(":")
        return getattr(importlib.import_module(module), cls)

    @property
    def config_class(self):
        return self.model_class.Config

    def net_kind(self, which: str) -> NetKind:
        return self.encoder if which == "E" and self.encoder else self.generator

    def generator_name(self, direction: str = "AtoB") -> str:
        return self.generators[-1] if direction == "BtoA" else self.generators[0]

    def default_arch(self, which: str) -> dict:
        """The architecture of `which` with this family's default training options."""
        return self.net_kind(which).options(self.config_class().to_dict(), which)


def _image_generator() -> NetKind:
    from gantk.checkpoints import describe_generator
    from gantk.models.networks import define_G, g_options
    return NetKind(lambda **arch: define_G(**arch), g_options, describe_generator)


def _bicycle(which: str) -> NetKind:
    from gantk.models import bicyclegan as b
    if which == "E":
        return NetKind(b.build_E, b.g_options, b.describe_E)
    return NetKind(lambda **arch: b.define_bicycle_G(**arch), b.g_options, b.describe_G)


def _transformer() -> NetKind:
    from gantk.nn.transformer import TransformerNet
    return NetKind(lambda **arch: TransformerNet(), lambda options, which: {"input_nc": 3, "output_nc": 3})


def _mlp() -> NetKind:
    from gantk.nn.mlp import mlp_generator

    def options(o, which):
        return {k: o[a] for k, a in (("latent_dim", "latent_dim"), ("hidden", "hidden_dim")) if a in o}
    return NetKind(mlp_generator, options)


FAMILIES = {f.name: f for f in (
    Family("cyclegan", "unpaired A <-> B: two ResNet generators, cycle + identity losses (Zhu et al. 2017)",
           "gantk.models.cyclegan:CycleGANModel", _image_generator(), ("G_A", "G_B"), scoring="cycle"),
    Family("pix2pix", "paired A -> B: U-Net generator, conditional PatchGAN + L1 (Isola et al. 2017)",
           "gantk.models.pix2pix:Pix2PixModel", _image_generator(), scoring="paired"),
    Family("bicyclegan", "paired, multimodal A -> B: G(A, z) with an encoder E(B) -> z (Zhu et al. 2017)",
           "gantk.models.bicyclegan:BicycleGANModel", _bicycle("G"), encoder=_bicycle("E"), inference="sample",
           scoring="paired"),
    Family("fast_style", "feed-forward style transfer: TransformerNet + VGG19 perceptual loss (Johnson et al. 2016)",
           "gantk.models.style:FastStyleModel", _transformer()),
    Family("mnist_gan", "the MLP GAN on MNIST digits (yunjey/pytorch-tutorial)",
           "gantk.models.mnist_gan:MnistGANModel", _mlp(), inference="none", exportable=False),
)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise GantkError(f"--model {name!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def get_model_class(name: str):
    """The training class registered under `name` (imported on first use)."""
    return get_family(name).model_class
