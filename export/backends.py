"""The one backend registry, shared by `gantk export` and `gantk bench`.

ARTIFACTS: each exported kind (an `--format` name): how it is built, its precision (the parity threshold)
and why it cannot be built here. RUNTIMES: each `gantk bench` backend that runs an artifact: which
artifact, how it is opened as a runner, and why it cannot run here. Adding a backend is one entry here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gantk.errors import GantkError
from gantk.export.spec import ExportSpec, on_device
from gantk.runtime import missing


@dataclass(frozen=True)
class Artifact:
    """An exported kind: `build(builder) -> path`, checked at `precision` on a `device` ('cuda' or any)."""
    format: str
    precision: str
    build: Callable[["Builder"], Path]
    packages: tuple[str, ...] = ()
    device: str = "any"

    def unavailable(self, device: torch.device | str) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            return f"{self.format} needs an NVIDIA GPU with CUDA"
        return missing(*self.packages)


def smallest_size(spec: ExportSpec, limit: int = 4096) -> int:
    """The smallest multiple of spec.multiple the eager generator runs on: the bottom of every exported
    size range (8 for the ResNet generators: after two stride-2 downsamplings reflect padding needs 2 px)."""
    with torch.no_grad(), on_device(spec.net, "cpu") as net:
        for size in range(spec.multiple, limit + 1, spec.multiple):
            try:
                net(*spec.example_inputs(batch=1, size=size))
                return size
            except (RuntimeError, ValueError):  # e.g. "padding size should be less than ... input dimension"
                continue
    raise GantkError(f"the generator runs on no size up to {limit} px")


class Builder:
    """Builds artifacts of one generator into `out` as `<name>.*`, each once (a TensorRT engine reuses the
    ONNX file of its precision). Sizes: the TensorRT profile's min/opt/max (min: by default the smallest size
    the generator runs on) and the AOTI package's size range."""

    def __init__(self, spec: ExportSpec, out: str | Path, name: str = "model", opset: int = 17, max_batch: int = 8,
                 min_size: int | None = None, opt_size: int = 256, max_size: int = 1024, device: str = "cpu"):
        self.spec, self.out, self.name, self.opset = spec, Path(out), name, opset
        self.max_batch, self.device = max_batch, device
        smallest = smallest_size(spec)
        self.sizes = (min_size or smallest, opt_size, max_size)
        for s in self.sizes:
            if s % spec.multiple:
                raise GantkError(f"size {s}: must be a multiple of {spec.multiple} for this generator")
        if not smallest <= self.sizes[0] <= opt_size <= max_size:
            raise GantkError(f"sizes min {self.sizes[0]}, opt {opt_size}, max {max_size}: need {smallest} <= min "
                             f"<= opt <= max ({smallest} px is the smallest this generator runs on)")
        self.built: dict[str, Path] = {}

    def build(self, fmt: str) -> Path:
        if fmt not in self.built:
            self.out.mkdir(parents=True, exist_ok=True)
            self.built[fmt] = ARTIFACTS[fmt].build(self)
        return self.built[fmt]

    def profile(self) -> dict:
        """The TensorRT optimisation profile (min/opt/max shape per input)."""
        from gantk.export.tensorrt import profile_shapes
        return profile_shapes(self.spec.input_names, self.spec.in_channels, self.spec.nz,
                              (1, max(1, self.max_batch // 2), self.max_batch), self.sizes)


def onnx_file(b: Builder, precision: str) -> Path:
    """The ONNX file of `precision` with its trtexec script, linted for the TensorRT that can parse it (10 for
    fp32/fp16 at the default opset; bf16 graphs are opset 22: TensorRT 11)."""
    from gantk.export.onnx import (TRT_MAX_OPSET, export_onnx, lint_tensorrt, load_onnx, opset_of,
                                   write_precision_variant)
    from gantk.export.tensorrt import trtexec_script
    path = export_onnx(b.spec, b.out / f"{b.name}.onnx", b.opset) if precision == "fp32" else \
        write_precision_variant(b.build("onnx"), precision)
    model = load_onnx(path)
    problems = lint_tensorrt(model, trt_version=10 if opset_of(model) <= TRT_MAX_OPSET[10] else 11)
    if problems:
        raise GantkError(f"{path}: not TensorRT-friendly: {'; '.join(problems[:3])}"
                         + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
    script = path.with_suffix(".trtexec.sh")
    script.write_text(trtexec_script(path, path.with_suffix(".plan"), b.profile(), precision,
                                     f"{b.name}.timing.cache"))
    script.chmod(0o755)
    return path


def _onnx(precision: str):
    return lambda b: onnx_file(b, precision)


def _aoti(b: Builder) -> Path:
    from gantk.export.aoti import export_aoti
    return export_aoti(b.spec, b.out / f"{b.name}.pt2", b.max_batch, b.sizes[2], b.device, min_size=b.sizes[0])


def _trt(precision: str):
    def build(b: Builder) -> Path:
        from gantk.export.runners import sidecar
        from gantk.export.tensorrt import build_engine
        kind = "onnx" if precision == "fp32" else f"onnx-{precision}"
        # the bf16 ONNX (opset 22) is only the engine's source: ONNX Runtime has no bf16 Conv to check it with
        src = b.build(kind) if kind in ARTIFACTS else onnx_file(b, precision)
        plan = build_engine(src, b.out / f"{b.name}.{precision}.plan", b.profile(), precision,
                            timing_cache=b.out / f"{b.name}.timing.cache")
        sidecar(plan).write_text(json.dumps({**b.spec.metadata(), "precision": precision}, indent=1))
        return plan
    return build


def _openvino(b: Builder) -> Path:
    """OpenVINO IR converted from the fp32 ONNX file (which is exported and checked too)."""
    from gantk.export.openvino import export_openvino
    return export_openvino(b.build("onnx"), b.out / f"{b.name}.xml", b.spec.metadata())


def _safetensors(b: Builder) -> Path:
    """The generator's weights with its family, architecture and BatchNorm mode in the header (a released file
    `gantk translate/export/bench --weights` and `gantk serve` load). Random weights (--netG alone) are built
    as cyclegan's generator."""
    from gantk.models.loading import write_safetensors
    family = "cyclegan" if b.spec.family == "random" else b.spec.family
    return write_safetensors(b.spec.net, b.out / f"{b.name}.safetensors", family, bn_mode=b.spec.bn_mode)


def _triton_repo(b: Builder) -> Path:
    """A Triton model repository serving the best artifact already built (TensorRT fp16, fp32, else ONNX)."""
    from gantk.export.triton_server import check_model_repository, write_model_repository
    artifact = next((b.built[k] for k in ("trt-fp16", "trt") if k in b.built), None) or b.build("onnx")
    kind = "KIND_GPU" if b.device.startswith("cuda") or artifact.suffix == ".plan" else "KIND_CPU"
    folder = write_model_repository(b.out / "triton", b.name, artifact, b.spec.metadata(), max_batch=b.max_batch,
                                    kind=kind)
    problems = check_model_repository(b.out / "triton")
    if problems:
        raise GantkError(f"{folder}: {problems[0]}")
    return folder


ONNX = ("onnx", "onnx_graphsurgeon")  # the exporter folds constants with onnx-graphsurgeon
ARTIFACTS = {a.format: a for a in (
    Artifact("onnx", "fp32", _onnx("fp32"), ONNX),
    Artifact("onnx-fp16", "fp16", _onnx("fp16"), (*ONNX, "onnxconverter_common")),
    Artifact("aoti", "fp32", _aoti),
    Artifact("trt", "fp32", _trt("fp32"), (*ONNX, "tensorrt"), "cuda"),
    Artifact("trt-fp16", "fp16", _trt("fp16"), (*ONNX, "onnxconverter_common", "tensorrt"), "cuda"),
    Artifact("trt-bf16", "bf16", _trt("bf16"), (*ONNX, "onnxconverter_common", "tensorrt"), "cuda"),
    Artifact("openvino", "fp32", _openvino, (*ONNX, "openvino")),
    Artifact("triton-repo", "fp32", _triton_repo, (*ONNX, "tritonclient")),
    Artifact("safetensors", "fp32", _safetensors, ("safetensors",)),
)}
FORMATS = tuple(ARTIFACTS)


@dataclass(frozen=True)
class Runtime:
    """A `gantk bench` backend: the artifact it runs and `open(path, device, threads) -> Runner`."""
    name: str
    artifact: str
    open: Callable
    provider: str = ""  # ONNX Runtime's execution provider it needs, if any

    def unavailable(self, device: torch.device) -> str | None:
        reason = ARTIFACTS[self.artifact].unavailable(device)
        if reason or not self.provider:
            return reason
        if self.provider != "CPUExecutionProvider" and device.type != "cuda":
            return f"{self.provider} runs on a CUDA device (--device cuda)"
        if reason := missing("onnxruntime"):
            return reason
        import onnxruntime as ort
        if self.provider not in ort.get_available_providers():
            return f"onnxruntime here has no {self.provider} (install onnxruntime-gpu on a CUDA machine)"
        return None


def _ort(ep: str):
    def open_(path, device, threads):
        from gantk.export.ort import PROVIDERS, OrtRunner
        return OrtRunner(path, providers=PROVIDERS[ep], threads=threads if ep == "cpu" else 0)
    return open_


def _open_aoti(path, device, threads):
    from gantk.export.aoti import AotiRunner
    return AotiRunner(path, device=str(device))


def _open_trt(path, device, threads):
    from gantk.export.tensorrt import TrtRunner
    return TrtRunner(path)


def _open_openvino(path, device, threads):
    from gantk.export.openvino import OpenVinoRunner
    return OpenVinoRunner(path, threads=threads)


RUNTIMES = {r.name: r for r in (
    Runtime("aoti", "aoti", _open_aoti),
    Runtime("ort-cpu", "onnx", _ort("cpu"), "CPUExecutionProvider"),
    Runtime("ort-cuda", "onnx", _ort("cuda"), "CUDAExecutionProvider"),
    Runtime("ort-trt", "onnx", _ort("tensorrt"), "TensorrtExecutionProvider"),
    Runtime("openvino-cpu", "openvino", _open_openvino),
    Runtime("trt-fp32", "trt", _open_trt),
    Runtime("trt-fp16", "trt-fp16", _open_trt),
)}
