"""Checkpoint files: atomic writes, reference-compatible state dicts, clear mismatch errors."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from gantk.errors import CheckpointError

TRAIN_STATE_FORMAT = "gantk-train-v1"
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) on CPU, with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors vary by torch version
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})".split("\n")[0]) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def normalize_state_dict(sd: dict, net: nn.Module) -> dict:
    """Strip DataParallel `module.` prefixes and drop InstanceNorm running stats that `net` does not keep."""
    sd = {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items() if not k.endswith("._metadata")}
    keep = net.state_dict().keys()
    return {k: v for k, v in sd.items() if k in keep or not k.endswith(_RUNNING_STATS)}


def describe_generator(sd: dict) -> dict:
    """Best guess of (netG, ngf, norm, use_dropout) from a generator state dict's keys and shapes."""
    sd = {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items()}
    guess: dict = {}
    has_bn = any(k.endswith("running_mean") for k in sd) and any(
        k.endswith(".weight") and v.dim() == 1 for k, v in sd.items())
    if "model.model.0.weight" in sd:
        depth = max(k.count("model.") for k in sd) - 1  # one `model.` per nested skip block
        guess.update(netG=f"unet_{2 ** depth}", ngf=sd["model.model.0.weight"].shape[0])
        biased = any(k.endswith(".bias") and ".model.1." in k and sd[k].dim() == 1 and
                     sd[k.replace(".bias", ".weight")].dim() == 4 for k in sd)
    elif "model.1.weight" in sd:
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block", k))}
        guess.update(netG=f"resnet_{len(blocks)}blocks", ngf=sd["model.1.weight"].shape[0],
                     use_dropout=any(".conv_block.6.weight" in k for k in sd))
        biased = "model.4.bias" in sd
    else:
        return guess
    guess["norm"] = "batch" if has_bn else ("instance" if biased else "none")
    return guess


def load_state_dict_checked(net: nn.Module, sd: dict, source: str, hint: str = "") -> nn.Module:
    """Load `sd` into `net` strictly; on mismatch raise naming missing/unexpected/shape-mismatched keys."""
    sd = normalize_state_dict(sd, net)
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise CheckpointError(f"{source} does not fit this architecture; {'; '.join(parts)}{hint}")
    net.load_state_dict(sd, strict=True)
    return net


def generator_state(obj: dict, which: str | None, source: str) -> tuple[dict, dict]:
    """(state dict, saved config) of one generator from a plain state dict or a gantk training state."""
    if obj.get("format") != TRAIN_STATE_FORMAT:
        return obj, {}
    nets = obj["nets"]
    names = list(nets)
    which = which or ("G" if "G" in nets else "G_A")
    if which not in nets:
        raise CheckpointError(f"{source}: has no network {which!r}; it holds {', '.join(names)}")
    return nets[which], obj.get("config", {})
