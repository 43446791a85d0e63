"""The one generator loader: an experiment (--name/--epoch) or a file (--weights) -> (network, arch, family).

gantk writes `<epoch>_net_<X>.json` next to each `<epoch>_net_<X>.pth` with the family and architecture, and
keeps both in `latest_state.pt`, so nothing of its own is guessed; a released generator (`gantk export
--format safetensors`) is one `.safetensors` file with the same description in its header metadata.
Reference files stay bare state dicts; for them (and older gantk experiments) the architecture comes,
lowest first, from the family's defaults, the experiment's saved options (train_opt.json), what the file's
keys and shapes say, then what the caller gives explicitly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from gantk.checkpoints import (TRAIN_STATE_FORMAT, describe_generator, generator_state, load_state_dict_checked,
                               read_checkpoint, save_files, verify_checksum)
from gantk.errors import CheckpointError, GantkError
from gantk.models.registry import Family, get_family
from gantk.nn.inference import prepare_for_inference
from gantk.runtime import require_module

SIDECAR_FORMAT = "gantk-net-v1"


@dataclass
class Loaded:
    net: nn.Module          # eval mode
    arch: dict              # the arguments its family builds it from
    family: Family
    path: Path
    options: dict           # the experiment's saved training options ({} for a bare file)
    state: bool = False     # read from a gantk training state (latest_state.pt), which holds every network
    description: dict = field(default_factory=dict)  # what gantk recorded with it (sidecar or safetensors header)


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def sidecar_text(family: str, which: str, arch: dict, step: int | None = None) -> str:
    """The `<epoch>_net_<X>.json` beside a saved network: which family's network it is, its architecture,
    and the training iteration it was saved at (a set of networks from one save has one step)."""
    return json.dumps({"format": SIDECAR_FORMAT, "family": family, "net": which, "arch": arch, "step": step}, indent=1)


def write_sidecar(path: str | Path, family: str, which: str, arch: dict, step: int | None = None) -> Path:
    return save_files({sidecar_path(path): sidecar_text(family, which, arch, step)})[0]


def read_sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise GantkError(f"{side}: not a readable gantk network description ({e})") from None
    return meta if meta.get("format") == SIDECAR_FORMAT else {}


def _safetensors():
    """safetensors.torch (save, safe_open), or a one-line error naming the extra."""
    return require_module("safetensors.torch", "safetensors files")


def write_safetensors(net: nn.Module, path: str | Path, family: str, which: str = "G", **extra: str) -> Path:
    """The network's weights as `path` (.safetensors), its description (the sidecar's fields, arch as JSON, plus
    `extra` strings) in the header metadata, so `load_file` rebuilds it with nothing to guess."""
    st = _safetensors()
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"format": SIDECAR_FORMAT, "family": family, "net": which, "arch": json.dumps(getattr(net, "arch", {})),
            **extra}
    return save_files({Path(path): st.save(tensors, metadata=meta)}, checksum=False)[0]


def read_safetensors(path: str | Path) -> tuple[dict, dict]:
    """(state dict, gantk description like a sidecar's, or {} for a foreign file) of a .safetensors file."""
    st, path = _safetensors(), Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    verify_checksum(path)
    try:
        with st.safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError for bad headers and truncation
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})".split("\n")[0]) from None
    if meta.get("format") != SIDECAR_FORMAT:
        return sd, {}
    try:
        return sd, {**meta, "arch": json.loads(meta["arch"])}
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: its header's gantk architecture is unreadable ({e})") from None


def experiment_options(name: str | None, checkpoints_dir: str | Path) -> dict:
    """The options saved with a gantk experiment (train_opt.json, with its family as "model"), or {}."""
    f = Path(checkpoints_dir) / name / "train_opt.json" if name else None
    return json.loads(f.read_text()) if f and f.is_file() else {}


def experiment_file(name: str, checkpoints_dir: str | Path, epoch: str, which: str) -> Path:
    """`<checkpoints_dir>/<name>/<epoch>_net_<which>.pth` (a lone `_net_G` file also serves for G_A)."""
    folder = Path(checkpoints_dir) / name
    path = folder / f"{epoch}_net_{which}.pth"
    if not path.is_file() and which == "G_A" and (folder / f"{epoch}_net_G.pth").is_file():
        return folder / f"{epoch}_net_G.pth"
    return path


def _family_of(model: str | None, side: dict, ckpt: dict, options: dict, sd: dict) -> Family:
    """Explicit --model, else what gantk recorded, else a guess: BatchNorm generators are pix2pix's."""
    name = model if model not in (None, "auto") else (
        side.get("family") or ckpt.get("model") or options.get("model")
        or ("pix2pix" if describe_generator(sd).get("norm") == "batch" else "cyclegan"))
    return get_family(name)


def load_file(path: str | Path, which: str | None = None, model: str | None = None, options: dict | None = None,
              **given) -> Loaded:
    """One network (a generator, or BicycleGAN's encoder with which="E") in eval mode from a gantk or
    reference file. `options`: the experiment's saved training options; `given`: explicit architecture
    arguments (CLI names like --no_dropout, or the factory's own like use_dropout; None = not given)."""
    path, options = Path(path), options or {}
    released = path.suffix == ".safetensors"
    ckpt, side = read_safetensors(path) if released else (read_checkpoint(path), read_sidecar(path))
    state = ckpt.get("format") == TRAIN_STATE_FORMAT
    probe = which or side.get("net") or ("G" if not state or "G" in ckpt["nets"] else "G_A")
    sd, in_state = generator_state(ckpt, probe, str(path))
    family = _family_of(model, side, ckpt if state else {}, options, sd)
    which = which or side.get("net") or (probe if state else family.generators[0])
    kind = family.net_kind(which)
    guess = kind.describe(sd)
    recorded = side.get("arch") or (ckpt.get("arch", {}).get(which) if state else None)
    if recorded is not None:  # gantk's own: nothing to guess
        arch = {**family.default_arch(which), **recorded}
    else:
        arch = {**family.default_arch(which), **kind.options({**options, **in_state}, which), **guess}
    # explicit arguments describe the network asked for (no G_B swap of the channels)
    explicit = {k: v for k, v in given.items() if v is not None}
    arch = {**arch, **kind.options(explicit, "E" if which == "E" else "G")}
    net = kind.build(**arch)
    hint = ""
    if guess:
        hint = "; the file looks like " + " ".join(f"--{k} {v}" for k, v in guess.items() if k != "use_dropout")
        hint += " with dropout" if guess.get("use_dropout") else ""
    if side.get("bn_mode") == "batch":  # exported with per-image BatchNorm statistics: the file holds that network
        prepare_for_inference(net, eval_mode=False, dropout=False, per_image=True)
    load_state_dict_checked(net, sd, str(path), hint)
    net.arch, net.family = arch, family.name
    return Loaded(net.eval(), arch, family, path, options, state, side)


def load(name: str | None = None, checkpoints_dir: str | Path = "./checkpoints", epoch: str = "latest",
         direction: str = "AtoB", which: str | None = None, weights: str | Path | None = None,
         model: str | None = None, **given) -> Loaded:
    """The generator of an experiment (--name, --epoch, --direction or --which) or of a file (--weights)."""
    options = experiment_options(name, checkpoints_dir)
    if weights:
        return load_file(weights, which, model, options, **given)
    if not name:
        raise GantkError("give --name (a trained experiment) or --weights (a generator file)")
    family = get_family(model if model not in (None, "auto") else options.get("model", "cyclegan"))
    which = which or family.generator_name(direction)
    steps = {w: read_sidecar(p).get("step") for w in (*family.generators, *(("E",) if family.encoder else ()))
             if (p := experiment_file(name, checkpoints_dir, epoch, w)).is_file()}
    if len(set(steps.values()) - {None}) > 1:
        raise CheckpointError(f"{Path(checkpoints_dir) / name}: the {epoch}_net_* files come from different saves "
                              f"(iterations {steps}), so a save was interrupted; run `gantk train ... --continue_train` "
                              "to write a consistent set")
    return load_file(experiment_file(name, checkpoints_dir, epoch, which), which, family.name, options, **given)


def load_encoder(loaded: Loaded, encoder: str | Path | None = None, **given) -> nn.Module | None:
    """The encoder beside a loaded generator (BicycleGAN's E): --encoder, else the same training state, else
    the `<epoch>_net_E.pth` next to the `_net_G` file; None when there is none (or the family has none)."""
    if loaded.family.encoder is None:
        return None
    path = Path(encoder) if encoder else loaded.path if loaded.state else \
        loaded.path.with_name(loaded.path.name.replace("_net_G", "_net_E"))
    if not encoder and (path == loaded.path and not loaded.state or not path.is_file()):
        return None
    return load_file(path, "E", loaded.family.name, loaded.options, **given).net


def load_generator(path: str | Path, which: str | None = None, model: str | None = None, **arch) -> nn.Module:
    """A network in eval mode from an official `*_net_G*.pth` or a gantk file (see `load_file`)."""
    return load_file(path, which, model, **arch).net
