"""Triton Inference Server model repositories: `<repo>/<model>/config.pbtxt` + `<model>/1/model.onnx|plan`."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from gantk.errors import GantkError

PLATFORMS = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan", ".engine": "tensorrt_plan"}


def config_pbtxt(name: str, platform: str, inputs: list[tuple[str, list[int]]], out_channels: int,
                 max_batch: int, instances: int, kind: str, delay_us: int) -> str:
    """The model configuration: fp32 NCHW tensors, batch dimension implicit (max_batch_size)."""
    def tensor(n, dims):
        return f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'
    prefs = sorted({b for b in (1, 2, 4, 8, 16, 32, max_batch) if b <= max_batch})
    return "\n".join([
        f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch}",
        "input [", ",\n".join(tensor(n, d) for n, d in inputs), "]",
        "output [", tensor("output", [out_channels, -1, -1]), "]",
        "dynamic_batching {", f"  preferred_batch_size: [ {', '.join(map(str, prefs))} ]",
        f"  max_queue_delay_microseconds: {delay_us}", "}",
        "instance_group [", f"  {{\n    count: {instances}\n    kind: {kind}\n  }}", "]", ""])


def write_model_repository(repo: str | Path, name: str, artifact: str | Path, metadata: dict,
                           max_batch: int = 8, instances: int = 1, kind: str = "KIND_GPU",
                           delay_us: int = 100) -> Path:
    """Copy `artifact` into a Triton model repository with a matching config.pbtxt; returns the model folder."""
    artifact = Path(artifact)
    platform = PLATFORMS.get(artifact.suffix)
    if platform is None:
        raise GantkError(f"{artifact}: Triton serves .onnx or .plan artifacts here")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GantkError(f"model name {name!r}: use letters, digits, '_', '-', '.'")
    folder = Path(repo) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact, folder / "1" / ("model.onnx" if artifact.suffix == ".onnx" else "model.plan"))
    channels = metadata.get("gantk_arch", {}).get("input_nc", 3)
    out_channels = metadata.get("gantk_arch", {}).get("output_nc", 3)
    inputs = [("input", [channels, -1, -1])] + ([("z", [int(metadata["nz"])])] if metadata.get("nz") else [])
    (folder / "config.pbtxt").write_text(config_pbtxt(name, platform, inputs, out_channels, max_batch,
                                                      instances, kind, delay_us))
    return folder


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([A-Za-z_][\w.]*)|("(?:[^"\\]|\\.)*")|(-?[\d.]+(?:e-?\d+)?)|([{}\[\]:,]))')


def parse_pbtxt(text: str) -> dict:
    """A small protobuf text-format reader (enough for model configs): repeated fields become lists."""
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise GantkError(f"config.pbtxt: cannot parse near {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group(1) is None:
            tokens.append(next(g for g in m.groups()[1:] if g is not None))
    it = iter(tokens + ["}"])

    def value(tok):
        if tok == "{":
            return message()
        if tok == "[":
            items = []
            for t in it:
                if t == "]":
                    return items
                if t != ",":
                    items.append(value(t))
        if tok.startswith('"'):
            return tok[1:-1]
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # enum names

    def message():
        out: dict = {}
        for key in it:
            if key == "}":
                return out
            if key == ",":
                continue
            tok = next(it)
            if tok == ":":
                tok = next(it)
            v = value(tok)
            if key in out:  # a repeated field written twice: collect into a list
                prev = out[key] if isinstance(out[key], list) else [out[key]]
                out[key] = prev + (v if isinstance(v, list) else [v])
            else:
                out[key] = v
        return out

    return message()


def check_model_repository(repo: str | Path) -> list[str]:
    """Problems with a repository written for Triton (missing files, mismatched names/dims)."""
    problems = []
    models = [p for p in Path(repo).iterdir() if p.is_dir()] if Path(repo).is_dir() else []
    if not models:
        return [f"{repo}: no model folders"]
    for folder in models:
        cfg_file = folder / "config.pbtxt"
        if not cfg_file.is_file():
            problems.append(f"{folder}: no config.pbtxt")
            continue
        cfg = parse_pbtxt(cfg_file.read_text())
        if cfg.get("name") != folder.name:
            problems.append(f"{cfg_file}: name {cfg.get('name')!r} != folder {folder.name!r}")
        model_file = folder / "1" / ("model.plan" if cfg.get("platform") == "tensorrt_plan" else "model.onnx")
        if not model_file.is_file():
            problems.append(f"{folder}: {model_file.relative_to(folder)} missing for platform {cfg.get('platform')}")
        for t in (cfg.get("input") or []) + (cfg.get("output") or []):
            if t.get("data_type") != "TYPE_FP32" or not t.get("dims"):
                problems.append(f"{cfg_file}: tensor {t.get('name')} needs TYPE_FP32 and dims")
        if cfg.get("max_batch_size", 0) < 1 or "dynamic_batching" not in cfg:
            problems.append(f"{cfg_file}: dynamic batching needs max_batch_size >= 1 and dynamic_batching")
    return problems
