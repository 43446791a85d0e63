"""Convolution and transposed convolution in bands of output rows (gantk.kernels.bands), by oneDNN per band or
(transposed) by GEMMs and the C col2im, against the one-call convolution in float64, and their place in the CPU
path (`patch_winograd`)."""
from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.acceleration import patch_winograd
from gantk.kernels import bands, native
from gantk.kernels.bands import BandedConv2d, BandedConvTranspose2d, banded_conv2d, banded_conv_transpose2d
from gantk.models.networks import define_G

# (batch, in, out, H, W, kernel (h, w), stride, padding, output_padding): the ResNet generators' upsampling
# (3, 2, 1, 1), the U-Net's (4, 2, 1, 0), output padding past the padding (rows no input reaches), stride 3,
# a non-square kernel, stride 1
SHAPES = [(1, 4, 3, 9, 7, (3, 3), 2, 1, 1), (2, 5, 2, 8, 6, (4, 4), 2, 1, 0), (1, 3, 2, 7, 5, (3, 3), 2, 0, 1),
          (1, 3, 3, 6, 6, (5, 5), 3, 2, 1), (2, 2, 3, 5, 9, (3, 5), 1, 1, 0), (1, 2, 2, 4, 4, (2, 2), 2, 0, 0)]


PATHS = ["onednn", pytest.param("gemm", marks=pytest.mark.skipif(native.library() is None, reason="no C compiler"))]


def _path(monkeypatch, path: str) -> None:
    """Make the large transposed convs take `path`: oneDNN per band, or the GEMMs and C col2im."""
    if path == "onednn":
        monkeypatch.setattr(bands.native, "usable", lambda *ts: False)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("band_bytes", [1, 60, 1 << 20])
@pytest.mark.parametrize("n,c,o,h,w,k,s,p,op", SHAPES)
def test_bands_match_the_one_call_convolution(n, c, o, h, w, k, s, p, op, band_bytes, path, monkeypatch):
    """Bands of one row (stride rows), of a few rows, and one call (the GEMM path: Z of one input row, of two,
    of all): F.conv_transpose2d in float64 to rounding. Non-square kernels take oneDNN's bands."""
    _path(monkeypatch, path)
    monkeypatch.setattr(bands, "BAND_BYTES", band_bytes)
    rows = {1: 1, 60: 2, 1 << 20: h}[band_bytes]
    monkeypatch.setattr(bands, "Z_BYTES", rows * 4 * k[0] * k[1] * o * w)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(n, c, h, w), torch.randn(c, o, *k), torch.randn(o)
    want = F.conv_transpose2d(x.double(), weight.double(), bias.double(), s, p, op)
    for b in (bias, None):
        got = banded_conv_transpose2d(x, weight, b, (s, s), (p, p), (op, op))
        ref = want if b is not None else want - bias.double().view(1, o, 1, 1)
        assert got.shape == ref.shape and (got - ref).abs().max() < 1e-5


# (batch, in, out, H, W, kernel (h, w), stride, padding (h, w)): the ResNet generators' first 7x7 (after its
# reflection pad) and their downsampling, the PatchGAN/U-Net 4x4 stride 2, a non-square kernel, stride 3 whose
# last band reads past the input's bottom rows
CONV_SHAPES = [(1, 3, 4, 14, 10, (7, 7), 1, (0, 0)), (2, 4, 5, 9, 8, (3, 3), 2, (1, 1)),
               (1, 3, 2, 8, 6, (4, 4), 2, (1, 1)), (1, 2, 3, 7, 9, (3, 5), 1, (1, 2)), (1, 2, 2, 10, 7, (5, 5), 3, (2, 2))]


@pytest.mark.parametrize("band_bytes", [1, 100, 1 << 20])
@pytest.mark.parametrize("n,c,o,h,w,k,s,p", CONV_SHAPES)
def test_conv_bands_match_the_one_call_convolution(n, c, o, h, w, k, s, p, band_bytes, monkeypatch):
    """Bands of one output row, of a few rows and one call: F.conv2d in float64 to rounding, with and without
    a bias; only the band count changes."""
    monkeypatch.setattr(bands, "BAND_BYTES", band_bytes)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(n, c, h, w), torch.randn(o, c, *k), torch.randn(o)
    want = F.conv2d(x.double(), weight.double(), bias.double(), s, p)
    calls, conv2d = [], F.conv2d
    monkeypatch.setattr(bands, "F", types.SimpleNamespace(pad=F.pad, conv2d=lambda *a: calls.append(1) or conv2d(*a)))
    for b in (bias, None):
        got = banded_conv2d(x, weight, b, (s, s), p)
        ref = want if b is not None else want - bias.double().view(1, o, 1, 1)
        assert got.shape == ref.shape and (got - ref).abs().max() < 1e-5
    rows = want.shape[2]
    assert len(calls) == 2 * {1: rows, 100: -(-rows // max(1, 100 // (4 * n * o * want.shape[3]))), 1 << 20: 1}[
        band_bytes]


@pytest.mark.parametrize("path", PATHS)
def test_the_module_bands_only_inference(path, monkeypatch):
    """No gradient: bands (counted) or GEMMs (counted); with gradients one call, whose gradients are the plain
    module's."""
    _path(monkeypatch, path)
    monkeypatch.setattr(bands, "BAND_BYTES", 64)
    monkeypatch.setattr(bands, "Z_BYTES", 4 * 9 * 3 * 6 * 2)  # two input rows per GEMM
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(4, 3, 3, 2, 1, 1)
    net = BandedConvTranspose2d.from_conv(ref)
    assert net.weight is ref.weight and net.bias is ref.bias
    calls = []
    monkeypatch.setattr(bands, "F", types.SimpleNamespace(  # the band calls only
        conv_transpose2d=lambda *a: calls.append(1) or F.conv_transpose2d(*a)))
    mm = torch.mm
    monkeypatch.setattr(bands.torch, "mm", lambda *a, **k: calls.append(2) or mm(*a, **k))
    x = torch.randn(2, 4, 10, 6, requires_grad=True)
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-5
    assert calls == [1] * len(calls) if path == "onednn" else calls == [2] * 10  # 2 samples x 5 bands
    assert len(calls) > 2
    calls.clear()
    got, want = net(x), ref(x)
    assert not calls and torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_conv_module_bands_only_inference(monkeypatch):
    """BandedConv2d shares the conv's Parameters; no gradient: bands; with gradients: the plain call, with the
    plain module's gradients."""
    monkeypatch.setattr(bands, "BAND_BYTES", 64)
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 3, 3, 2, 1)
    net = BandedConv2d.from_conv(ref)
    assert net.weight is ref.weight and net.bias is ref.bias
    x = torch.randn(2, 4, 12, 6, requires_grad=True)
    calls, conv2d = [], F.conv2d
    monkeypatch.setattr(bands, "F", types.SimpleNamespace(pad=F.pad, conv2d=lambda *a: calls.append(1) or conv2d(*a)))
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-5
    assert len(calls) == 6  # 6 output rows of 2 x 3 x 3 floats: 72 bytes, one row per band
    calls.clear()
    got, want = net(x), ref(x)
    assert not calls and torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_patch_winograd_bands_the_resnet_up_and_downsampling(monkeypatch):
    """resnet_6blocks: both transposed convs, both strided convs and the first 7x7 are swapped (keys kept),
    the output is unchanged to rounding with bands of a few rows, and torch.export records one conv or
    transposed conv each. A U-Net, with no stride-1 conv to swap, is left as it is."""
    monkeypatch.setattr(bands, "BAND_BYTES", 256)
    torch.manual_seed(0)
    ref = define_G(3, 3, 8, "resnet_6blocks", norm="instance").eval()
    net = copy.deepcopy(ref)
    patch_winograd(net)
    assert sum(type(m) is BandedConvTranspose2d for m in net.modules()) == 2
    assert [m.stride[0] for m in net.modules() if type(m) is BandedConv2d] == [1, 2, 2]
    assert list(net.state_dict()) == list(ref.state_dict())
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-4
    ep = torch.export.export(net, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("conv_transpose" in t for t in targets) == 2
    assert sum(t.startswith("aten.conv2d") for t in targets) == 3 + 2 * 6 + 1  # banded, Winograd, the last 7x7
    unet = define_G(3, 3, 4, "unet_128", norm="batch")
    patch_winograd(unet)
    assert not any(isinstance(m, (BandedConv2d, BandedConvTranspose2d)) for m in unet.modules())
