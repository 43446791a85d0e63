"""Few-output-channel convolution (gantk.kernels.shift_conv: the C direct kernel's forward, or GEMM+shift)
against oneDNN's convolution, and the allocator setting of the CPU convolution path."""
from __future__ import annotations

import platform
import resource
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels import native, shift_conv
from gantk.kernels.shift_conv import ShiftConv2d, shift_applicable, shift_conv2d

# (batch, in, out, H, W, padding, kernel): the generators' last 7x7 to RGB, PatchGAN's 4x4 to one logit,
# TransformerNet's 9x9, a 3x3; input exactly the kernel's size, odd sizes, batch > 1; an output row 57 wide
# (the C kernel's two-vector segments, a one-vector one and single pixels, with 8- or 16-float vectors)
SHAPES = [(1, 6, 3, 13, 11, 0, 7), (2, 5, 1, 9, 10, 1, 4), (1, 4, 3, 9, 9, 0, 9), (3, 3, 2, 5, 7, 1, 3),
          (1, 2, 4, 3, 3, 0, 3), (2, 8, 3, 4, 6, 3, 7), (1, 3, 3, 7, 57, 3, 7)]


@pytest.mark.parametrize("path", [pytest.param("c", marks=pytest.mark.skipif(native.library() is None,
                                                                                reason="no C compiler")), "gemm"])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("chunk", [shift_conv.CHUNK, 7])
@pytest.mark.parametrize("n,c,o,h,w,p,k", SHAPES)
def test_forward_and_gradients_match_direct_convolution(n, c, o, h, w, p, k, chunk, mode, path, monkeypatch):
    """fp32 output (with and without gradients) and input/weight/bias gradients to 1e-5 of their scale;
    chunk 7 cuts the flattened input mid-row (backward) or into single rows (forward), so the shifted slices
    cross chunk borders. The forward is the C kernel's or GEMM+shift's; the backward is always GEMMs."""
    if mode == "reflect" and p >= min(h, w):
        pytest.skip("reflect padding needs an input larger than the padding")
    if path == "gemm":
        monkeypatch.setattr(shift_conv.native, "usable", lambda *ts: False)
    monkeypatch.setattr(shift_conv, "CHUNK", chunk)
    monkeypatch.setattr(shift_conv, "FEW_BYTES", chunk)
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, requires_grad=True)
    wt = (torch.randn(o, c, k, k) / (k * c ** 0.5)).requires_grad_()
    b = torch.randn(o, requires_grad=True)
    want = F.conv2d(F.pad(x, (p,) * 4, mode="reflect" if mode == "reflect" else "constant"), wt, b)
    got = shift_conv2d(x, wt, b, p, mode)
    with torch.no_grad():
        assert (shift_conv2d(x, wt, b, p, mode) - want).abs().max() <= 1e-5 * want.abs().max()
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()
    g = torch.randn_like(want)
    for a, e in zip(torch.autograd.grad(got, [x, wt, b], g), torch.autograd.grad(want, [x, wt, b], g)):
        assert (a - e).abs().max() <= 1e-5 * e.abs().max()


def test_weight_gradient_alone_and_no_bias():
    """An input that needs no gradient (a network's first layer) gets none; the weight's is still right, and
    so is a bias's when it is the only thing trained."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 10, 12)
    wt = torch.randn(3, 4, 7, 7, requires_grad=True)
    got = shift_conv2d(x, wt, None, 3)
    want = F.conv2d(x, wt, None, padding=3)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    gw, = torch.autograd.grad(got.square().sum(), [wt])
    ww, = torch.autograd.grad(want.square().sum(), [wt])
    assert (gw - ww).abs().max() <= 1e-5 * ww.abs().max()
    b = torch.randn(3, requires_grad=True)  # a bias alone to train (frozen weight)
    gb, = torch.autograd.grad(shift_conv2d(x, wt.detach(), b, 3, "reflect").square().sum(), [b])
    wb, = torch.autograd.grad(F.conv2d(F.pad(x, (3,) * 4, mode="reflect"), wt.detach(), b).square().sum(), [b])
    assert (gb - wb).abs().max() <= 1e-5 * wb.abs().max()


def test_dtypes_layouts_and_bad_input():
    """Autocast gives its dtype, half inputs stay half, channels_last stays channels_last; bad shapes fail
    with one line."""
    torch.manual_seed(0)
    x, wt = torch.randn(1, 4, 9, 9), torch.randn(3, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert shift_conv2d(x, wt, padding=1).dtype == torch.bfloat16
    assert shift_conv2d(x.half(), wt.half()).dtype == torch.float16
    got = shift_conv2d(x.contiguous(memory_format=torch.channels_last), wt, padding=1)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, F.conv2d(x, wt, padding=1), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(O, 4, k, k\) weight"):
        shift_conv2d(x, torch.randn(3, 5, 3, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        shift_conv2d(torch.randn(1, 4, 2, 9), wt)


def test_which_convs_qualify():
    assert shift_applicable(nn.Conv2d(64, 3, 7))
    assert shift_applicable(nn.Conv2d(512, 1, 4, padding=1))
    assert not shift_applicable(nn.Conv2d(64, 8, 7))  # oneDNN's blocks are full
    assert not shift_applicable(nn.Conv2d(64, 3, 3, stride=2))
    assert not shift_applicable(nn.Conv2d(64, 3, 1))  # a 1x1 conv is already one GEMM
    assert not shift_applicable(nn.Conv2d(64, 3, 3, padding=1, padding_mode="reflect"))
    conv = ShiftConv2d.from_conv(nn.Conv2d(5, 2, 3, padding=1))
    x = torch.randn(1, 5, 6, 7)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
    conv = ShiftConv2d.from_conv(nn.Conv2d(5, 2, 7), reflect_pad=3)  # a ReflectionPad2d(3) folded in
    assert torch.allclose(conv(x), F.conv2d(F.pad(x, (3,) * 4, mode="reflect"), conv.weight, conv.bias), atol=1e-5)


FAULTS = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys
    from gantk.kernels.runtime import keep_freed_memory
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    if sys.argv[1] == "keep":
        assert keep_freed_memory() and keep_freed_memory()
    faults = []
    for _ in range(2):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(int(sys.argv[2]) << 20)
        ctypes.memset(block, 1, int(sys.argv[2]) << 20)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(*faults)
""")


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_reuses_freed_blocks_without_page_faults():
    """A 24 MiB and a 96 MiB block (a 1024 px 256-channel map is 64 MiB) freed and asked for again (what a conv
    layer's temporaries do every step): glibc's default maps each afresh, so each of their pages faults again
    on first touch; after keep_freed_memory() the freed block stays in the heap and the second round touches
    no new page. (On whole Winograd steps the default's dynamic threshold makes the count vary run to run,
    2-20k faults per 5 steps measured; this is the mechanism.)"""
    def faults(mode: str, mib: int) -> list[int]:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode, str(mib)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return [int(n) for n in out.stdout.split()]
    for mib in (24, 96):
        pages = (mib << 20) // resource.getpagesize()
        default, keep = faults("default", mib), faults("keep", mib)
        assert default[0] > pages / 2 and keep[0] > pages / 2  # both touch fresh memory the first time
        assert default[1] > pages / 2, default
        assert keep[1] < pages / 100, keep
