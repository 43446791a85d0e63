"""Model families by name, the reference factories, and loading of official/gantk generators."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from gantk.checkpoints import describe_generator, generator_state, load_state_dict_checked, read_checkpoint
from gantk.errors import GantkError
from gantk.nn.layers import prepare_for_inference
from gantk.models.networks import NETD_NAMES, NETG_NAMES, define_D, define_G, size_multiple

MODELS = {
    "cyclegan": "gantk.models.cyclegan:CycleGANModel",
    "pix2pix": "gantk.models.pix2pix:Pix2PixModel",
    "bicyclegan": "gantk.models.bicyclegan:BicycleGANModel",
    "fast_style": "gantk.models.style:FastStyleModel",
    "mnist_gan": "gantk.models.mnist_gan:MnistGANModel",
}


def get_model_class(name: str):
    """The model class registered under `name` (imported lazily)."""
    if name not in MODELS:
        raise GantkError(f"--model {name!r}: expected one of {', '.join(MODELS)}")
    import importlib
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_generator(path: str | Path, netG: str | None = None, ngf: int = 64, norm: str = "instance",
                   use_dropout: bool = False, input_nc: int = 3, output_nc: int = 3,
                   which: str | None = None) -> nn.Module:
    """A generator in eval mode from an official `*_net_G*.pth` or a gantk checkpoint.

    Reference files load unchanged (DataParallel `module.` prefixes and old InstanceNorm running
    stats are tolerated). For a gantk training state, `which` picks the network (G, G_A, G_B) and
    netG=None takes the architecture saved with it.
    """
    obj = read_checkpoint(path)
    sd, saved = generator_state(obj, which, str(path))
    if netG is None:
        if saved:
            netG, ngf, norm = saved["netG"], saved["ngf"], saved["norm"]
            use_dropout = not saved.get("no_dropout", True)
            input_nc, output_nc = saved.get("input_nc", 3), saved.get("output_nc", 3)
            if which == "G_B":
                input_nc, output_nc = output_nc, input_nc
        else:
            guess = describe_generator(sd)
            if "netG" not in guess:
                raise GantkError(f"{path}: cannot tell the generator architecture; pass --netG")
            netG, ngf, norm = guess["netG"], guess["ngf"], guess["norm"]
            use_dropout = guess.get("use_dropout", use_dropout)
    net = define_G(input_nc, output_nc, ngf, netG, norm=norm, use_dropout=use_dropout)
    guess = describe_generator(sd)
    hint = ""
    if guess:
        hint = "; the file looks like " + " ".join(f"--{k} {v}" for k, v in guess.items() if k != "use_dropout")
        if guess.get("use_dropout"):
            hint += " with dropout"
    load_state_dict_checked(net, sd, str(path), hint)
    return net.eval()


__all__ = ["MODELS", "NETD_NAMES", "NETG_NAMES", "define_D", "define_G", "get_model_class",
           "load_generator", "prepare_for_inference", "size_multiple"]
