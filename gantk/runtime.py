"""Where gantk runs: the device, the CPU's facts, and the environment record written with every result."""
from __future__ import annotations

import datetime
import functools
import os
import platform

import torch

from gantk.errors import GantkError

PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "triton")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks this process's GPU under torchrun (LOCAL_RANK), else cuda:0, else CPU; a device this
    machine does not have is a one-line GantkError."""
    if name == "auto":
        name = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise GantkError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise GantkError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GantkError(f"--device {name}: this PyTorch sees no CUDA GPU (use --device cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise GantkError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo field ({} where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> str:
    """The CPU's feature flags (what -march=native compiles for); the processor name where unknown."""
    info = _cpuinfo()
    return info.get("flags") or info.get("Features") or platform.processor()


def cpu_name() -> str:
    """e.g. 'AMD EPYC 7B13 (2 logical CPUs)'."""
    return f"{_cpuinfo().get('model name') or platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def cpu_has_bf16() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 or AMX); without them CPU AMP is very slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: ask the CPU
        flags = cpu_flags().split()
        return "avx512_bf16" in flags or "amx_bf16" in flags


def environment() -> dict:
    """Date, Python, machine, CPU, GPU and package versions: recorded with every export and benchmark."""
    import importlib.metadata as md
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
            "gpu": gpu, "versions": versions}
