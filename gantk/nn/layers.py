"""Normalisation choice and weight initialisation, as in the reference code bases."""
from __future__ import annotations

import functools

import torch.nn as nn
from torch.nn import init

from gantk.errors import GantkError

NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def get_norm_layer(norm: str = "instance"):
    """A constructor `f(num_features) -> nn.Module` for 'batch' | 'instance' | 'none'."""
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda num_features: nn.Identity()
    raise GantkError(f"--norm {norm!r}: expected one of {', '.join(NORMS)}")


def uses_bias(norm_layer) -> bool:
    """Convs before a norm carry a bias only with instance norm (the reference's rule)."""
    func = getattr(norm_layer, "func", norm_layer)
    return func is nn.InstanceNorm2d


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """Conv/Linear weights ~ init_type(gain), biases 0; BatchNorm weight ~ N(1, gain)."""
    def init_fn(m):
        name = type(m).__name__
        if hasattr(m, "weight") and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                init.normal_(m.weight, 0.0, init_gain)
            elif init_type == "xavier":
                init.xavier_normal_(m.weight, gain=init_gain)
            elif init_type == "kaiming":
                init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                init.orthogonal_(m.weight, gain=init_gain)
            else:
                raise GantkError(f"--init_type {init_type!r}: expected one of {', '.join(INIT_TYPES)}")
            if getattr(m, "bias", None) is not None:
                init.constant_(m.bias, 0.0)
        elif "BatchNorm2d" in name:
            init.normal_(m.weight, 1.0, init_gain)
            init.constant_(m.bias, 0.0)
    return net.apply(init_fn)


def set_requires_grad(nets, requires_grad: bool) -> None:
    for net in nets if isinstance(nets, (list, tuple)) else [nets]:
        for p in net.parameters():
            p.requires_grad_(requires_grad)
