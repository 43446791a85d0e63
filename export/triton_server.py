"""Triton Inference Server model repositories: `<repo>/<model>/config.pbtxt` + `<model>/1/model.onnx|plan`."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from gantk.errors import GantkError
from gantk.runtime import require_module

PLATFORMS = {".onnx": "onnxruntime_onnx", ".plan": "tensorrt_plan", ".engine": "tensorrt_plan"}


def _proto():
    """Triton's ModelConfig proto and protobuf's text_format (both come with tritonclient[grpc])."""
    purpose = "Triton model repositories (Triton's ModelConfig proto)"
    return (require_module("tritonclient.grpc.model_config_pb2", purpose),
            require_module("google.protobuf.text_format", purpose))


def tensor_dims(metadata: dict) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """(inputs, outputs) as (name, dims without the batch dimension) of a gantk generator's export metadata:
    `input` (C, H, W) [+ `z` (nz)] -> `output` (C', H, W), fp32, H and W free (-1)."""
    arch, nz = metadata.get("gantk_arch", {}), int(metadata.get("nz") or 0)
    inputs = [("input", [arch.get("input_nc", 3), -1, -1])] + ([("z", [nz])] if nz else [])
    return inputs, [("output", [arch.get("output_nc", 3), -1, -1])]


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes Triton's dynamic batcher prefers to form, up to max_batch."""
    return sorted({b for b in (1, 2, 4, 8, 16, 32, max_batch) if b <= max_batch})


def model_config(name: str, platform: str, metadata: dict, max_batch: int, instances: int, kind: str, delay_us: int):
    """Triton's ModelConfig message: fp32 NCHW tensors, batch dimension implicit (max_batch_size), dynamic
    batching, `instances` instances of `kind` (KIND_CPU / KIND_GPU)."""
    mc, _ = _proto()
    fp32 = mc.DataType.Value("TYPE_FP32")
    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    inputs, outputs = tensor_dims(metadata)
    config.input.extend(mc.ModelInput(name=n, data_type=fp32, dims=d) for n, d in inputs)
    config.output.extend(mc.ModelOutput(name=n, data_type=fp32, dims=d) for n, d in outputs)
    config.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes(max_batch))
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    config.instance_group.append(mc.ModelInstanceGroup(count=instances,
                                                       kind=mc.ModelInstanceGroup.Kind.Value(kind)))
    return config


def read_config(path: str | Path):
    """config.pbtxt parsed by protobuf's text format into Triton's ModelConfig (unknown fields and bad
    syntax are one-line GantkErrors, as Triton itself would refuse them)."""
    mc, text_format = _proto()
    try:
        return text_format.Parse(Path(path).read_text(), mc.ModelConfig())
    except text_format.ParseError as e:
        raise GantkError(f"{path}: not a valid Triton model configuration ({e})") from None


def check_model_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GantkError(f"model name {name!r}: use letters, digits, '_', '-', '.'")


def write_model_repository(repo: str | Path, name: str, artifact: str | Path, metadata: dict,
                           max_batch: int = 8, instances: int = 1, kind: str = "KIND_GPU",
                           delay_us: int = 100) -> Path:
    """Copy `artifact` into a Triton model repository with a matching config.pbtxt; returns the model folder."""
    artifact = Path(artifact)
    platform = PLATFORMS.get(artifact.suffix)
    if platform is None:
        raise GantkError(f"{artifact}: Triton serves .onnx or .plan artifacts here")
    check_model_name(name)
    folder = Path(repo) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact, folder / "1" / ("model.onnx" if artifact.suffix == ".onnx" else "model.plan"))
    config = model_config(name, platform, metadata, max_batch, instances, kind, delay_us)
    (folder / "config.pbtxt").write_text(_proto()[1].MessageToString(config))
    return folder


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
        try:
            cfg = read_config(cfg_file)
        except GantkError as e:
            problems.append(str(e))
            continue
        if cfg.name != folder.name:
            problems.append(f"{cfg_file}: name {cfg.name!r} != folder {folder.name!r}")
        model_file = folder / "1" / ("model.plan" if cfg.platform == "tensorrt_plan" else "model.onnx")
        if not model_file.is_file():
            problems.append(f"{folder}: {model_file.relative_to(folder)} missing for platform {cfg.platform}")
        fp32 = _proto()[0].DataType.Value("TYPE_FP32")
        for t in [*cfg.input, *cfg.output]:
            if t.data_type != fp32 or not t.dims:
                problems.append(f"{cfg_file}: tensor {t.name} needs TYPE_FP32 and dims")
        if cfg.max_batch_size < 1 or not cfg.HasField("dynamic_batching"):
            problems.append(f"{cfg_file}: dynamic batching needs max_batch_size >= 1 and dynamic_batching")
    return problems
