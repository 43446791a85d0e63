"""Normalisation choice and weight initialisation, as in the reference code bases."""
from __future__ import annotations

import functools

import torch.nn as nn
from torch.nn import init

from gantk.errors import GantkError

NORMS = ("batch", "instance", "none")


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
                raise GantkError(f"--init_type {init_type!r}: expected normal, xavier, kaiming or orthogonal")
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


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def prepare_for_inference(net: nn.Module, eval_mode: bool = True) -> nn.Module:
    """Put `net` in its test-time mode and record the choice in `net.inference` (for translate/export).

    eval_mode=True: eval() (BatchNorm running statistics, no dropout). False: what the reference test
    script does without --eval (pix2pix): BatchNorm normalises with the statistics of the batch being
    translated and dropout stays active; the running statistics are left untouched.
    `net.inference["bn_mode"]` is "eval", "batch" or "none" (no BatchNorm layers).
    """
    net.train(not eval_mode)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = eval_mode  # off in train mode: batch statistics, buffers untouched
    bn_mode = ("eval" if eval_mode else "batch") if has_batchnorm(net) else "none"
    dropout = not eval_mode and any(isinstance(m, nn.Dropout) for m in net.modules())
    net.inference = {"eval": eval_mode, "bn_mode": bn_mode, "dropout": dropout}
    return net
