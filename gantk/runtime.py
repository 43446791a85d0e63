"""Where gantk runs: the device, the CPU's facts, the environment record written with every result, and the
optional packages (imported on demand, or a one-line reason naming the gantk extra that installs them)."""
from __future__ import annotations

import datetime
import functools
import importlib
import importlib.util
import os
import platform
from types import ModuleType

import torch

from gantk.errors import GantkError

PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "triton")
# the gantk extra that installs each optional package (by its import name); any other: 'export'
EXTRAS = {"openvino": "openvino", "tensorrt": "trt", "pytriton": "serve", "tensorboard": "tensorboard"}


def not_installed(package: str) -> str:
    """The one-line reason for a missing optional package, naming the extra that installs it."""
    return f"{package} is not installed (pip install 'gantk[{EXTRAS.get(package, 'export')}]')"


def missing(*packages: str) -> str | None:
    """`not_installed` of the first of `packages` (import names) not installed here; None: all are. Finds,
    does not import."""
    return next((not_installed(p) for p in packages if importlib.util.find_spec(p) is None), None)


def optional_module(name: str) -> ModuleType | None:
    """The module `name` (dotted names too) imported, or None where it or what it needs is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def require_module(name: str, purpose: str) -> ModuleType:
    """The module `name` imported, or a one-line GantkError '<purpose>: <package> is not installed (pip install
    ...)' (or, where the package is there but does not import, the import's own error)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        package = name.split(".")[0]
        reason = (not_installed(package) if importlib.util.find_spec(package) is None
                  else f"{package} is installed but does not import ({e})")
        raise GantkError(f"{purpose}: {reason}") from None


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
