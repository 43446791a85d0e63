"""The one owner of a generator's test-time mode: how BatchNorm normalises and whether dropout is on, set
together and recorded together in `net.inference` (translate writes it to translate.json, export into the
artifact's metadata)."""
from __future__ import annotations

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

BN_MODES = ("batch", "eval")  # each image's own statistics (the reference test script), or the running ones


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in net.modules())


class PerImageNorm(nn.Module):
    """BatchNorm's affine parameters with the statistics of each image (== batch statistics at batch 1)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.norm = nn.InstanceNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine)
        if bn.affine:
            self.norm.load_state_dict({"weight": bn.weight.detach(), "bias": bn.bias.detach()})

    def forward(self, x):
        return self.norm(x)


def _per_image(net: nn.Module) -> None:
    for name, child in list(net.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(net, name, PerImageNorm(child))
        else:
            _per_image(child)


def prepare_for_inference(net: nn.Module, eval_mode: bool = True, dropout: bool | None = None,
                          per_image: bool = False) -> nn.Module:
    """Put `net` in its test-time mode, in place, and record it in `net.inference` ({eval, bn_mode, dropout}).

    eval_mode=True: BatchNorm uses its running statistics. False: what the reference test script does
    without --eval (pix2pix): BatchNorm normalises with the statistics of the batch being translated,
    leaving the running statistics untouched; with `per_image`, each BatchNorm is replaced (for good) by a
    per-image norm with its affine parameters, which is the same at batch size 1 and what a static graph
    (ONNX, AOTInductor) can hold. `dropout`: keep Dropout active; default: as the reference, on without
    eval_mode. bn_mode is "eval", "batch" or "none" (no BatchNorm layers).
    """
    bn_mode = ("eval" if eval_mode else "batch") if has_batchnorm(net) else "none"
    dropout = (not eval_mode) if dropout is None else dropout
    if bn_mode == "batch" and per_image:
        _per_image(net)
    net.eval()
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            m.train(not eval_mode)
            m.track_running_stats = eval_mode  # off in train mode: batch statistics, buffers untouched
        elif isinstance(m, _DropoutNd):
            m.train(dropout)
    dropout = dropout and any(isinstance(m, _DropoutNd) for m in net.modules())
    net.inference = {"eval": eval_mode, "bn_mode": bn_mode, "dropout": dropout}
    return net
