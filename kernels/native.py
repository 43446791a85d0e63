"""The Winograd tile transforms in C (`tiles.c`), compiled on first use with the machine's C compiler and
loaded with ctypes: each fuses what takes the torch path several passes (gather, pad, transform, layout
change, overlap-add). Built with -march=native -fopenmp into GANTK_CACHE_DIR (default ~/.cache/gantk),
keyed by the source, compiler, flags and CPU. Without a compiler, or with GANTK_NATIVE=0, `library()`
is None and the Winograd path uses torch ops instead (same results up to rounding)."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("tiles.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=gnu99", "-shared", "-fPIC")
_L, _I, _P = ctypes.c_long, ctypes.c_int, ctypes.c_void_p


def _cpu_flags() -> str:
    """The CPU's feature flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _build(cc: str) -> Path:
    """Compile tiles.c into the cache (atomically) unless it is there; the .so's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), cc, version, *FLAGS, platform.machine(), _cpu_flags()])
                         .encode()).hexdigest()[:16]
    cache = Path(os.environ.get("GANTK_CACHE_DIR") or Path.home() / ".cache" / "gantk") / "native"
    lib = cache / f"tiles-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip().splitlines()[-1:]}")
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled transforms, or None (GANTK_NATIVE=0, no C compiler, or the build failed: logged once)."""
    if os.environ.get("GANTK_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler: the Winograd transforms use torch ops")
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("could not build the C Winograd transforms (%s); using torch ops", e)
        return None
    lib.gantk_tiles_in.argtypes = [_P, _L, _L, _L, _L, _L, _L, _L, _I, _P, _L, _L, _L, _P, _I]
    lib.gantk_tiles_out.argtypes = [_P, _L, _L, _L, _L, _L, _P, _L, _L, _L, _I, _L, _L, _P, _I]
    lib.gantk_tiles_in.restype = lib.gantk_tiles_out.restype = _I
    return lib


def _checked(*ts: torch.Tensor) -> None:
    for t in ts:
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"native tiles: expected contiguous fp32 CPU tensors, got {t.dtype} {t.device}")


def tiles_in(x: torch.Tensor, T: torch.Tensor, stride: int, pad: int, reflect: bool, th: int, tw: int) -> torch.Tensor:
    """Every T.shape[1]-sized tile at `stride` of x (N, C, H, W), padded by `pad` (reflect or zeros) and
    zero past that, transformed as T t T^T (T: q x size) -> (q*q, C, N*th*tw)."""
    _checked(x, T)
    n, c, h, w = x.shape
    q, size = T.shape
    out = x.new_empty(q * q, c, n * th * tw)
    if library().gantk_tiles_in(x.data_ptr(), n, c, h, w, size, stride, pad, int(reflect), T.data_ptr(), q, th, tw,
                                out.data_ptr(), torch.get_num_threads()):
        raise MemoryError("native tiles_in: out of memory")
    return out


def tiles_out(t: torch.Tensor, S: torch.Tensor, stride: int, pad: int, reflect: bool, n: int, th: int, tw: int,
              h: int, w: int) -> torch.Tensor:
    """The adjoint of `tiles_in`: tiles t (q*q, C, n*th*tw) transformed as S t S^T (S: size x q), added at
    `stride` into a padded plane, whose padding is folded back (reflect) or dropped -> (n, C, h, w)."""
    _checked(t, S)
    size, q = S.shape
    c = t.shape[1]
    out = t.new_empty(n, c, h, w)
    if library().gantk_tiles_out(t.data_ptr(), n, c, th, tw, q, S.data_ptr(), size, stride, pad, int(reflect), h, w,
                                 out.data_ptr(), torch.get_num_threads()):
        raise MemoryError("native tiles_out: out of memory")
    return out
