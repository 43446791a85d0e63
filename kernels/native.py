"""The CPU kernels in C, compiled on first use with the machine's C compiler and loaded with ctypes:
the Winograd tile transforms (`tiles.c`; each fuses what takes torch ops several passes: gather, pad,
transform, layout change, overlap-add), the Winograd forward's batched GEMM (`gemm.c`), the direct
convolution for few output channels and the transposed convolution's col2im (`conv.c`), and InstanceNorm +
activation (+ residual), forward and backward (`norm.c`). Built with -march=native -fopenmp into
GANTK_CACHE_DIR (default ~/.cache/gantk), keyed by the sources, compiler, flags and CPU. Without a compiler, or with GANTK_NATIVE=0, `library()` is None and
callers use torch ops instead (same results up to rounding)."""
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

from gantk.runtime import cpu_flags

log = logging.getLogger(__name__)
SOURCES = tuple(Path(__file__).with_name(f) for f in ("simd.h", "tiles.c", "norm.c", "gemm.c", "conv.c"))
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=gnu99", "-shared", "-fPIC")
_L, _I, _P, _F = ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_float
# activation codes of the fused norms, shared by the C kernels (norm.c) and the Triton ones
ACTIVATIONS = {"none": 0, "relu": 1, "leaky_relu": 2, "tanh": 3}


def _build(cc: str) -> Path:
    """Compile the sources into the cache (atomically) unless they are there; the .so's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    text = [f.read_text() for f in SOURCES]
    key = hashlib.sha256("\0".join([*text, cc, version, *FLAGS, platform.machine(), cpu_flags()])
                         .encode()).hexdigest()[:16]
    cache = Path(os.environ.get("GANTK_CACHE_DIR") or Path.home() / ".cache" / "gantk") / "native"
    lib = cache / f"gantk-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, *(str(f) for f in SOURCES if f.suffix == ".c"), "-o", tmp, "-lm"],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or [""])[-1]
                raise RuntimeError(f"{cc} exited with {done.returncode}{': ' + last if last else ''}")
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (GANTK_NATIVE=0, no C compiler, or the build failed: logged once)."""
    if os.environ.get("GANTK_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler: the CPU kernels use torch ops")
        return None
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("could not build the C CPU kernels (%s); using torch ops", e)
        return None
    lib.gantk_tiles_in.argtypes = [_P, _L, _L, _L, _L, _L, _L, _L, _I, _P, _L, _L, _L, _L, _P, _I]
    lib.gantk_tiles_out.argtypes = [_P, _L, _L, _L, _L, _L, _P, _L, _L, _L, _I, _L, _L, _P, _I]
    lib.gantk_tiles_out_rows.argtypes = [_P, _L, _L, _L, _L, _L, _P, _L, _L, _L, _L, _P, _I]
    lib.gantk_in_fwd.argtypes = [_P, _P, _P, _P, _L, _L, _L, _F, _I, _F, _P, _P, _P, _I]
    lib.gantk_in_bwd.argtypes = [_P, _P, _P, _P, _P, _P, _L, _L, _L, _I, _F, _P, _P, _P, _I]
    lib.gantk_gemm.argtypes = [_P, _P, _P, _L, _L, _L, _L, _I]
    lib.gantk_weight_packed.argtypes = [_P, _L, _L, _L, _P, _L, _P, _I]
    lib.gantk_conv_few.argtypes = [_P, _L, _L, _L, _L, _P, _L, _L, _P, _P, _L, _L, _I]
    lib.gantk_col2im.argtypes = [_P, _L, _L, _L, _L, _L, _L, _L, _L, _P, _P, _L, _L, _L, _I]
    for f in (lib.gantk_tiles_in, lib.gantk_tiles_out, lib.gantk_tiles_out_rows, lib.gantk_in_fwd, lib.gantk_in_bwd,
              lib.gantk_gemm, lib.gantk_weight_packed, lib.gantk_conv_few, lib.gantk_col2im):
        f.restype = _I
    return lib


def usable(*ts: torch.Tensor | None) -> bool:
    """The C kernels are built and take these tensors (fp32, CPU, contiguous; None allowed)."""
    return library() is not None and all(
        t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()) for t in ts)


def _checked(*ts: torch.Tensor) -> None:
    if not usable(*ts):
        raise ValueError("native: expected contiguous fp32 CPU tensors and a built library")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _run(name: str, *args) -> None:
    """Call the C function `name` with `args` and the thread count; its return code: -1 out of memory,
    -2 a tile larger than the kernels take."""
    code = getattr(library(), name)(*args, torch.get_num_threads())
    if code == -1:
        raise MemoryError(f"native {name}: out of memory")
    if code:
        raise ValueError(f"native {name}: tiles larger than 8x8")


def tiles_in(x: torch.Tensor, T: torch.Tensor, stride: int, pad: int, reflect: bool, th: int, tw: int,
             i0: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Every T.shape[1]-sized tile at `stride` of x (N, C, H, W), padded by `pad` (reflect or zeros) and
    zero past that, transformed as T t T^T (T: q x size) -> (q*q, C, N*th*tw); only the th tile rows from
    tile row i0. `out`: a contiguous tensor of that shape to write (else a new one)."""
    n, c, h, w = x.shape
    q, size = T.shape
    out = x.new_empty(q * q, c, n * th * tw) if out is None else out
    _checked(x, T, out)
    if out.shape != (q * q, c, n * th * tw):
        raise ValueError(f"native tiles_in: out must be {(q * q, c, n * th * tw)}, got {tuple(out.shape)}")
    _run("gantk_tiles_in", x.data_ptr(), n, c, h, w, size, stride, pad, int(reflect), T.data_ptr(), q, i0, th, tw,
         out.data_ptr())
    return out


def tiles_out(t: torch.Tensor, S: torch.Tensor, stride: int, pad: int, reflect: bool, n: int, th: int, tw: int,
              h: int, w: int) -> torch.Tensor:
    """The adjoint of `tiles_in`: tiles t (q*q, C, n*th*tw) transformed as S t S^T (S: size x q), added at
    `stride` into a padded plane, whose padding is folded back (reflect) or dropped -> (n, C, h, w)."""
    _checked(t, S)
    size, q = S.shape
    c = t.shape[1]
    out = t.new_empty(n, c, h, w)
    _run("gantk_tiles_out", t.data_ptr(), n, c, th, tw, q, S.data_ptr(), size, stride, pad, int(reflect), h, w,
         out.data_ptr())
    return out


def tiles_out_rows(t: torch.Tensor, S: torch.Tensor, i0: int, th: int, out: torch.Tensor) -> None:
    """`tiles_out` of non-overlapping, unpadded tiles (S: m x q, stride m) for tile rows i0 .. i0+th-1 only:
    t (q*q, C, N*th*tw) -> their rows of out (N, C, H, W), written in place (other rows untouched)."""
    _checked(t, S, out)
    m, q = S.shape
    n, c, h, w = out.shape
    tw = -(-w // m)
    if t.shape != (q * q, c, n * th * tw) or i0 * m >= h:
        raise ValueError(f"native tiles_out_rows: {tuple(t.shape)} tiles from row {i0} do not fit {tuple(out.shape)}")
    _run("gantk_tiles_out_rows", t.data_ptr(), n, c, th, tw, q, S.data_ptr(), m, i0, h, w, out.data_ptr())


GEMM_ROWS = 8  # rows of A interleaved by the packing `gemm` takes (MR in gemm.c)


@functools.cache
def _avx512() -> bool:
    return "avx512f" in cpu_flags().split()


def gemm_fast() -> bool:
    """Whether `gemm` beats torch's bmm here: it is built and the CPU has AVX-512 (its 16 accumulators of 16
    floats need 32 vector registers; with AVX2 torch's bmm stays). GANTK_GEMM=0 turns it off."""
    return library() is not None and os.environ.get("GANTK_GEMM", "1") != "0" and _avx512()


def gemm(A: torch.Tensor, B: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[p] = A[p] @ B[p] for P points: A (P, O/8, K, 8), each 8 consecutive rows interleaved (row 8j+i of
    A[p] at A[p, j, :, i]), B (P, K, T) -> out (P, O, T), written in place and returned."""
    _checked(A, B, out)
    p, blocks, k, rows = A.shape
    t = B.shape[2]
    if rows != GEMM_ROWS or B.shape != (p, k, t) or out.shape != (p, blocks * rows, t):
        raise ValueError(f"native gemm: shapes {tuple(A.shape)}, {tuple(B.shape)}, {tuple(out.shape)} do not chain")
    _run("gantk_gemm", A.data_ptr(), B.data_ptr(), out.data_ptr(), p, blocks * rows, k, t)
    return out


def weight_packed(w: torch.Tensor, G: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The Winograd weight transform G w G^T of an (O, I, k, k) weight (G: n x k) in the layout `gemm` takes:
    out (n*n, O/8, I, 8), written in place and returned."""
    _checked(w, G, out)
    o, i, k = w.shape[:3]
    n = G.shape[0]
    if o % GEMM_ROWS or G.shape[1] != k or out.shape != (n * n, o // GEMM_ROWS, i, GEMM_ROWS):
        raise ValueError(f"native weight_packed: {tuple(w.shape)} by G {tuple(G.shape)} does not fill {tuple(out.shape)}")
    _run("gantk_weight_packed", w.data_ptr(), o, i, k, G.data_ptr(), n, out.data_ptr())
    return out


CONV_FEW_OUT = 4  # most output channels `conv_few` takes (MAXO in conv.c)


def conv_few(xp: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """out = F.conv2d(xp, w, bias) (stride 1, no padding) for an already padded (N, C, Hp, Wp) xp and an
    (O, C, k, k) weight with O <= CONV_FEW_OUT; out (N, O, Ho, Wo) may be a view whose rows are contiguous
    (a slice of rows of a larger output). Written in place and returned."""
    _checked(xp, bias)
    n, c, hp, wp = xp.shape
    o, k = w.shape[0], w.shape[2]
    if (w.shape[1] != c or o > CONV_FEW_OUT or out.shape != (n, o, hp - k + 1, wp - k + 1) or out.stride(3) != 1
            or out.stride(2) != out.shape[3] or out.dtype != torch.float32):
        raise ValueError(f"native conv_few: {tuple(xp.shape)} by {tuple(w.shape)} does not fill {tuple(out.shape)}")
    taps = w.float().permute(1, 2, 3, 0).contiguous()  # [C][k][k][O]
    _run("gantk_conv_few", xp.data_ptr(), n, c, hp, wp, taps.data_ptr(), o, k, _ptr(bias), out.data_ptr(),
         out.stride(0), out.stride(1))
    return out


def instance_norm_act(x: torch.Tensor, weight, bias, eps: float, activation: str, slope: float, residual,
                      inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """act(InstanceNorm(x) * weight + bias) + residual for NCHW x -> (y, mean, rstd), fp32 statistics; y is
    x itself when `inplace` (each plane's statistics are taken before it is overwritten)."""
    _checked(x, weight, bias, residual)
    n, c, h, w = x.shape
    y = x if inplace else torch.empty_like(x)
    mean, rstd = x.new_empty(n, c), x.new_empty(n, c)
    _run("gantk_in_fwd", x.data_ptr(), _ptr(weight), _ptr(bias), _ptr(residual), n, c, h * w, eps,
         ACTIVATIONS[activation], slope, y.data_ptr(), mean.data_ptr(), rstd.data_ptr())
    return y, mean, rstd


def instance_norm_act_backward(dy, x, weight, bias, mean, rstd, activation: str, slope: float):
    """(dx, per-plane sum of dz, per-plane sum of dz * xhat), dz the gradient before the activation."""
    _checked(dy, x, weight, bias, mean, rstd)
    n, c, h, w = x.shape
    dx = torch.empty_like(x)
    sdz, sdzx = x.new_empty(n, c), x.new_empty(n, c)
    _run("gantk_in_bwd", dy.data_ptr(), x.data_ptr(), _ptr(weight), _ptr(bias), mean.data_ptr(), rstd.data_ptr(),
         n, c, h * w, ACTIVATIONS[activation], slope, dx.data_ptr(), sdz.data_ptr(), sdzx.data_ptr())
    return dx, sdz, sdzx


def col2im(Z: torch.Tensor, k: int, stride: int, padding: int, ih0: int, h: int, w: int,
           bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """The output rows of a transposed conv that input rows ih0 .. ih0+rows-1 reach, from Z (k*k*O, rows*w):
    every tap's contribution (row (kh*k + kw)*O + o); y (O, Ho, Wo) is one sample's output, (h, w) its input's
    size. See gantk_col2im in conv.c."""
    _checked(Z, bias)
    o, ho, wo = y.shape
    rows = Z.shape[1] // w
    if Z.shape != (k * k * o, rows * w) or y.stride(2) != 1 or y.stride(1) != wo or ih0 + rows > h:
        raise ValueError(f"native col2im: Z {tuple(Z.shape)} does not fit output {tuple(y.shape)}")
    _run("gantk_col2im", Z.data_ptr(), o, k, stride, padding, ih0, rows, h, w, _ptr(bias), y.data_ptr(), ho, wo,
         y.stride(0))
    return y
