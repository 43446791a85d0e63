"""`gantk export`: write the requested artifacts, lint them, and prove parity with the eager model."""
from __future__ import annotations

import datetime
import json
import platform
import shutil
from pathlib import Path

import torch

from gantk.errors import GantkError
from gantk.export.onnx import export_onnx, lint_tensorrt, load_onnx, write_precision_variant
from gantk.export.parity import ParityReport, check_parity
from gantk.export.runners import load_runner, sidecar
from gantk.export.spec import ExportSpec

FORMATS = ("onnx", "onnx-fp16", "aoti", "trt", "trt-fp16", "trt-bf16", "triton-repo")


def environment() -> dict:
    import importlib.metadata as md
    versions = {}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "triton"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "gpu": gpu, "versions": versions}


def _lint(model, path: Path) -> None:
    problems = lint_tensorrt(model)
    if problems:
        raise GantkError(f"{path}: not TensorRT-friendly: {'; '.join(problems[:3])}"
                         + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))


def run_export(spec: ExportSpec, out_dir: str | Path, formats: list[str], photos: list, sizes: list[int],
               opset: int = 17, max_batch: int = 8, min_size: int | None = None, opt_size: int = 256,
               max_size: int = 1024, device: str = "cpu", name: str = "model", log=print) -> dict:
    """Export `spec` to each format under out_dir, check parity, write manifest.json.
    Raises GantkError after writing everything when any artifact fails its parity threshold."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise GantkError(f"--format {','.join(unknown)}: expected one or more of {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    min_size = min_size or spec.multiple
    for s in (min_size, opt_size, max_size, *sizes):
        if s % spec.multiple:
            raise GantkError(f"size {s}: must be a multiple of {spec.multiple} for this generator")
    spec.net.to("cpu").float().eval()
    done: dict[str, Path] = {}
    reports: list[ParityReport] = []
    shapes = None

    def verify(path: Path, precision: str, dev: str) -> Path:
        report = check_parity(spec, load_runner(path, device=dev), photos, sizes, precision)
        log(report.table())
        reports.append(report)
        return path

    def onnx_file(precision: str) -> Path:
        key = "onnx" if precision == "fp32" else f"onnx-{precision}"
        if key not in done:
            base = done.get("onnx") or export_onnx(spec, out / f"{name}.onnx", opset)
            done["onnx"] = base
            path = base if precision == "fp32" else write_precision_variant(base, precision)
            _lint(load_onnx(path), path)
            done[key] = path
            write_trtexec(path, precision)
        return done[key]

    def write_trtexec(path: Path, precision: str) -> None:
        from gantk.export.tensorrt import profile_shapes, trtexec_command
        nonlocal shapes
        shapes = profile_shapes(spec.input_names, spec.in_channels, spec.nz, (1, max(1, max_batch // 2), max_batch),
                                (min_size, opt_size, max_size))
        cmd = trtexec_command(path.name, path.with_suffix(".plan").name, shapes, precision,
                              cache=f"{name}.timing.cache")
        script = path.with_suffix(".trtexec.sh")
        script.write_text(f"#!/bin/sh\n# Build a TensorRT engine from {path.name} without Python.\ncd \"$(dirname \"$0\")\"\n{cmd}\n")
        script.chmod(0o755)

    for fmt in formats:
        log(f"--- {fmt}")
        if fmt in ("onnx", "onnx-fp16"):
            precision = "fp32" if fmt == "onnx" else "fp16"
            verify(onnx_file(precision), precision, device)
        elif fmt == "aoti":
            from gantk.export.aoti import export_aoti
            done["aoti"] = verify(export_aoti(spec, out / f"{name}.pt2", max_batch, max_size, device), "fp32", device)
        elif fmt.startswith("trt"):
            from gantk.export.tensorrt import build_engine, import_tensorrt
            import_tensorrt()
            precision = fmt.split("-")[1] if "-" in fmt else "fp32"
            src = onnx_file(precision)
            plan = build_engine(src, out / f"{name}.{precision}.plan", shapes, precision,
                                timing_cache=out / f"{name}.timing.cache")
            sidecar(plan).write_text(json.dumps({**spec.metadata(), "precision": precision}, indent=1))
            done[fmt] = verify(plan, precision, "cuda")
        elif fmt == "triton-repo":
            from gantk.export.triton_server import check_model_repository, write_model_repository
            artifact = next((done[k] for k in ("trt-fp16", "trt", "onnx") if k in done), None) or onnx_file("fp32")
            meta = spec.metadata()
            folder = write_model_repository(out / "triton", name, artifact, meta, max_batch=max_batch,
                                            kind="KIND_GPU" if device.startswith("cuda") or artifact.suffix == ".plan" else "KIND_CPU")
            problems = check_model_repository(out / "triton")
            if problems:
                raise GantkError(f"{folder}: {problems[0]}")
            done["triton-repo"] = folder
            log(f"Triton model repository: {folder.parent} (serving {artifact.name})")
    failed = [r for r in reports if not r.passed]
    for r in failed:  # never leave a wrong artifact where a deployment script would pick it up
        p = Path(r.artifact)
        if p.exists():
            shutil.move(p, p.with_name(p.name + ".parity-failed"))
    manifest = {"name": name, "metadata": spec.metadata(), "environment": environment(),
                "artifacts": {k: str(v) for k, v in done.items()}, "parity": [r.to_dict() for r in reports],
                "passed": not failed}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if failed:
        raise GantkError(f"parity FAILED for {', '.join(Path(r.artifact).name for r in failed)} "
                         f"(renamed *.parity-failed; see {out / 'manifest.json'})")
    return manifest
