"""Pretrained weights come from files the user gives (nothing is downloaded): one resolver for every network."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from gantk.errors import GantkError

RANDOM_WEIGHTS = "random"  # test/debug switch: seeded random weights, results meaningless


def resolve_weights(weights: str | None, option: str, env: str, url: str, what: str) -> str:
    """The weights file from `weights`, else $`env`, or RANDOM_WEIGHTS; a one-line error saying where to get it."""
    w = weights or os.environ.get(env, "")
    if not w:
        raise GantkError(f"{what} needed: download {url} and pass {option} FILE (or set {env}=FILE)")
    if w != RANDOM_WEIGHTS and not Path(w).is_file():
        raise GantkError(f"{option} {w}: no such file ({what}: {url})")
    return w


def seeded_random_init(net: nn.Module, mode: str = "fan_in", then: Callable[[], None] | None = None) -> None:
    """The RANDOM_WEIGHTS switch: every Conv2d of `net` Kaiming-normal (ReLU gain, `mode`) with zero biases, then
    `then()`, all from seed 0 without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if then is not None:
            then()


def weights_record(weights: str) -> str:
    """A weights file as recorded beside a result (an absolute path); the RANDOM_WEIGHTS switch as it is."""
    return weights if weights == RANDOM_WEIGHTS else os.path.abspath(weights)
