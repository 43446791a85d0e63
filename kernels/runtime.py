"""When the Triton kernels run, and the small layout helpers both ops share."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

import torch

try:
    import triton
    HAS_TRITON = True
except ImportError:  # the ops still work: every call takes the torch path
    triton = None
    HAS_TRITON = False

# Triton decides at decoration time whether a @triton.jit kernel is interpreted, so this is read once,
# when gantk.kernels is imported (set TRITON_INTERPRET=1 before that to run the kernels on CPU tensors).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(t: torch.Tensor) -> bool:
    """Triton for CUDA tensors, and for CPU tensors under TRITON_INTERPRET=1; torch ops otherwise."""
    return HAS_TRITON and (t.device.type == "cpu" if INTERPRET else t.is_cuda)


def exporting() -> bool:
    """True while ONNX/TorchScript tracing or torch.export traces a model: the plain torch ops must be
    recorded then, never our custom ops (torch.compile, which can run them, answers False)."""
    if torch.compiler.is_exporting():
        return True
    if torch.compiler.is_compiling():
        return False
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for NHWC tensors, else contiguous (NCHW): the layout outputs are given."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def dense(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """`t` in layout `fmt` (a copy only when it is not already)."""
    return t if t.is_contiguous(memory_format=fmt) else t.contiguous(memory_format=fmt)


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every block from its heap (never a fresh mmap) and keep freed memory in the
    process. By default it maps each block over 32 MiB (smaller ones until its threshold has adapted) freshly
    and unmaps it when freed, so every such tensor starts with a page fault and a zeroed page per 4 KiB: the
    CPU convolution paths make many per layer (47k faults per CycleGAN step, 4-8% of a Winograd generator's
    forward+backward; at 1024 px, where every 256-channel map is 64 MB, a Winograd forward took 7.4-7.9 s
    instead of 5.5-5.7 s). The process then holds its peak memory until it exits, and a heap that large
    blocks fragment peaks higher than the mapped ones (1.7-1.9 GB instead of 1.4 at 1024 px). False (and
    nothing changed) off glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1))


def cuda_programs(device: torch.device, per_sm: int = 4) -> int:
    """Programs that keep every SM busy (a small fixed number when interpreting on CPU)."""
    if device.type != "cuda":
        return 8
    return per_sm * torch.cuda.get_device_properties(device).multi_processor_count


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
