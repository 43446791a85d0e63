"""Checkpoint files: atomic writes published as a set, SHA-256 beside each, reference-compatible state dicts,
clear mismatch errors."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from gantk.errors import CheckpointError

TRAIN_STATE_FORMAT = "gantk-train-v1"
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _write_temp(content, path: Path) -> Path:
    """`content` (bytes, str, or an object for torch.save) in a hidden temp file beside `path`, fsynced."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, (bytes, str)):
                f.write(content.encode() if isinstance(content, str) else content)
            else:
                torch.save(content, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on {path.parent}: {path.name} was not written; the previous "
                                  "files are kept") from None
        raise
    return Path(tmp)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """`<file>.sha256` beside a file gantk wrote, in `sha256sum -c` format."""
    return Path(f"{path}.sha256")


def save_files(files: dict, checksum: bool = True) -> list[Path]:
    """Write every {path: content} (torch objects, with a `.sha256` beside each; text or bytes as they are)
    to temp files first, then publish them all, one rename each: a crash leaves either no new file or the
    whole set but for the few renames then in flight, never half a file."""
    temps: dict[Path, Path] = {}
    try:
        for path, content in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temps[path] = _write_temp(content, path)
            if checksum and not isinstance(content, (bytes, str)):
                temps[checksum_path(path)] = _write_temp(f"{sha256_file(temps[path])}  {path.name}\n", path)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for path, tmp in temps.items():
        os.replace(tmp, path)
    return list(files)


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename (with its `.sha256` beside it)."""
    return save_files({Path(path): obj})[0]


def verify_checksum(path: Path) -> None:
    """CheckpointError when `path` has a `.sha256` beside it that its bytes no longer match."""
    side = checksum_path(path)
    if side.is_file():
        want = side.read_text().split()[0] if side.read_text().strip() else ""
        if sha256_file(path) != want:
            raise CheckpointError(f"{path}: its SHA-256 differs from {side.name} (damaged or changed after gantk "
                                  f"wrote it); restore the file, or delete {side.name} to load it anyway")


def read_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) on CPU, with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    verify_checksum(path)
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
