"""Winograd F(4x4, 3x3) and F(3x3, 4x4) convolution (gantk.kernels.winograd) against direct convolution and
hand truths."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels import native, winograd
from gantk.kernels.shift_conv import ShiftConv2d
from gantk.acceleration import patch_winograd
from gantk.kernels.winograd import (TILE, WinogradConv2d, line_transforms, matrices, transform_weight,
                                    winograd_conv2d)
from gantk.models import define_G


# Lavin & Gray's published F(2, 3) and F(4, 3) matrices (points 0, +-1, +-2, inf), as an independent check
# of the construction
LAVIN = (0, 1, -1, 2, -2)
PUBLISHED = {
    (4, 3): ([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
             [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
             [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
              [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
    (2, 3): ([[1, 1, 1, 0], [0, 1, -1, -1]], [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
             [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
}


@pytest.mark.parametrize("m,r", sorted(PUBLISHED))
def test_constructed_matrices_are_the_published_ones(m, r):
    """The matrices are unique up to a scale per interpolation point that cancels in A^T[(G g) * (B^T d)]
    (Lavin & Gray's F(2, 3) writes the infinity point's column of A^T as -1): compare, per point j, the
    rank-1 product A^T[:, j] x G[j] x B^T[j]."""
    def per_point(at, g, bt):
        return torch.einsum("ij,jk,jl->jikl", at, g, bt)
    want = per_point(*(torch.tensor(t, dtype=torch.float64) for t in PUBLISHED[m, r]))
    assert torch.allclose(per_point(*matrices(m, r, LAVIN)), want, atol=1e-12)
    if (m, r) == (4, 3):
        assert torch.allclose(matrices(m, r, LAVIN)[0], torch.tensor(PUBLISHED[m, r][0], dtype=torch.float64))


@pytest.mark.parametrize("r", sorted(TILE))
def test_one_dimensional_transforms_compute_correlation(r):
    """A^T[(G g) * (B^T d)] equals the m-output correlation of an (m + r - 1)-sample signal with an r-tap
    filter, in float64 (np.correlate as truth), for the tile sizes in use."""
    m = TILE[r]
    at, g_, bt = (t.numpy() for t in matrices(m, r))
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.normal(size=m + r - 1), rng.normal(size=r)
        assert np.allclose(at @ ((g_ @ g) * (bt @ d)), np.correlate(d, g, mode="valid"), atol=1e-12)


# (batch, in, out, H, W, padding, kernel): tiny (the kernel's size, a single tile, H or W = 2 with
# padding), odd sizes that leave partial tiles, exact tile multiples, batch > 1; 4x4 as in PatchGAN's
# stride-1 layers (padding 1)
SHAPES = [(1, 1, 2, 3, 3, 0, 3), (1, 4, 3, 2, 5, 1, 3), (2, 5, 3, 7, 9, 1, 3), (1, 8, 8, 10, 10, 0, 3),
          (3, 6, 4, 13, 6, 1, 3), (1, 2, 3, 4, 4, 0, 4), (2, 5, 3, 7, 9, 1, 4), (1, 8, 1, 11, 12, 1, 4)]


@pytest.fixture(params=["c", "torch"])
def transforms_in(request, monkeypatch):
    """Run a test with the C tile transforms and again with the torch-op ones (as without a compiler)."""
    if request.param == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    elif native.library() is None:
        pytest.skip("the C transforms did not build here (no C compiler?); the torch path is tested")
    return request.param


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,c,o,h,w,p,k", SHAPES)
def test_forward_and_gradients_match_direct_convolution(n, c, o, h, w, p, k, bias, mode, transforms_in):
    """fp32, zero or reflect padding, C and torch transforms: output to 1e-5 of its scale, input/weight/bias
    gradients to 1e-5 of theirs (direct conv rounds differently; the transforms add ~1e-6 relative per tile)."""
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float32, requires_grad=True)
    wt = (torch.randn(o, c, k, k) / (k * c ** 0.5)).requires_grad_()
    b = torch.randn(o, requires_grad=True) if bias else None
    want = F.conv2d(F.pad(x, (p,) * 4, mode="reflect" if mode == "reflect" else "constant"), wt, b)
    got = winograd_conv2d(x, wt, b, p, padding_mode=mode)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    dy = torch.randn_like(want)
    inputs = [t for t in (x, wt, b) if t is not None]
    for g_want, g_got in zip(torch.autograd.grad(want, inputs, dy), torch.autograd.grad(got, inputs, dy)):
        assert (g_got - g_want).abs().max() <= 1e-5 * g_want.abs().max()


@pytest.mark.parametrize("r", sorted(TILE))
@pytest.mark.parametrize("n,c,h,w,pad,reflect", [(1, 3, 64, 64, 1, True), (2, 3, 7, 5, 1, True), (2, 3, 9, 11, 1, False),
                                                  (1, 2, 2, 3, 1, True), (1, 2, 5, 6, 0, False), (1, 2, 31, 37, 2, True)])
def test_c_tile_transforms_match_torch_ops(r, n, c, h, w, pad, reflect):
    """The C transforms against the same maths in torch ops (float64): tiles_in = pad, gather every tile,
    T t T^T; tiles_out = its adjoint (checked as <tiles_in(x), t> == <x, tiles_out(t)>), also for the
    output transform's crop. Widths give full and partial 8-tile vector blocks."""
    if native.library() is None:
        pytest.skip("the C transforms did not build here (no C compiler?)")
    torch.manual_seed(0)
    m = TILE[r]
    a = m + r - 1
    AT, A, BT, B = line_transforms(r)
    x = torch.randn(n, c, h, w)
    xp = F.pad(x.double(), (pad,) * 4, mode="reflect" if reflect else "constant") if pad else x.double()
    th, tw = -(-(xp.shape[2] - r + 1) // m), -(-(xp.shape[3] - r + 1) // m)
    xp = F.pad(xp, (0, m * tw + r - 1 - xp.shape[3], 0, m * th + r - 1 - xp.shape[2]))
    tiles = xp.unfold(2, a, m).unfold(3, a, m)  # (n, c, th, tw, a, a)
    want = torch.einsum("pi,ncxyij,qj->pqcnxy", BT.double(), tiles, BT.double()).reshape(a * a, c, n * th * tw)
    V = native.tiles_in(x, BT, m, pad, reflect, th, tw)
    assert V.shape == want.shape and torch.allclose(V.double(), want, atol=1e-4)
    t = torch.randn(a * a, c, n * th * tw)
    back = native.tiles_out(t, B, m, pad, reflect, n, th, tw, h, w)
    assert back.shape == x.shape
    assert torch.allclose((V.double() * t.double()).sum(), (x.double() * back.double()).sum(), rtol=1e-4)
    y = native.tiles_out(t, AT, m, 0, False, n, th, tw, th * m - 1, tw * m - 2)  # output tiles, cropped
    M = t.double().view(a, a, c, n, th, tw)
    full = torch.einsum("ip,pqcnxy,jq->ncxiyj", AT.double(), M, AT.double()).reshape(n, c, th * m, tw * m)
    assert torch.allclose(y.double(), full[:, :, :th * m - 1, :tw * m - 2], atol=1e-4)
    if th > 1:  # tile rows 1 .. th-1 only, into their rows of the cropped output; row 0 untouched
        V1 = native.tiles_in(x, BT, m, pad, reflect, th - 1, tw, i0=1)
        want1 = want.view(a * a, c, n, th, tw)[:, :, :, 1:].reshape(a * a, c, -1)
        assert torch.allclose(V1.double(), want1, atol=1e-4)
        y1 = torch.zeros(n, c, th * m - 1, tw * m - 2)
        native.tiles_out_rows(t.view(a * a, c, n, th, tw)[:, :, :, 1:].contiguous().view(a * a, c, -1), AT, 1,
                              th - 1, y1)
        assert (y1[:, :, :m] == 0).all()
        assert torch.allclose(y1[:, :, m:].double(), full[:, :, m:th * m - 1, :tw * m - 2], atol=1e-4)


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("fit", [1, 25, 130])
@pytest.mark.parametrize("r", sorted(TILE))
def test_blocked_inference_forward_matches_direct_convolution(r, fit, gemm, monkeypatch, transforms_in):
    """Without gradients the forward runs block by block, BLOCK_BYTES set for `fit` tiles per block: one tile
    row (10 or 12 tiles), two rows, or whole images (two per block of the batch of 3 for F(4x4, 3x3));
    reflect padding and a bias, 23 x 37 leaves partial tiles and a partial vector block. The GEMMs are
    torch's bmm (6 outputs) or gantk's C GEMM with the packed weight (16 outputs, on any CPU here)."""
    if gemm and native.library() is None:
        pytest.skip("the packed GEMM is a C kernel: not with the torch-ops transforms")
    o = 16 if gemm else 6
    monkeypatch.setattr(native, "gemm_fast", lambda: gemm)
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 4 * 36 * (4 + o) * fit)
    torch.manual_seed(0)
    x, wt, b = torch.randn(3, 4, 23, 37), torch.randn(o, 4, r, r) / (2 * r), torch.randn(o)
    want = F.conv2d(F.pad(x, (1,) * 4, mode="reflect"), wt, b)
    with torch.no_grad():
        got = winograd_conv2d(x, wt.requires_grad_(), b, 1, padding_mode="reflect")
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("p,o,k,t", [(36, 8, 3, 1), (36, 16, 65, 33), (5, 24, 130, 64), (2, 256, 256, 100)])
def test_c_gemm_matches_float64_with_no_more_rounding_than_bmm(p, o, k, t):
    """native.gemm on the packed A (8 rows interleaved) against the float64 product: 1, 33, 64 and 100
    columns (partial and whole 32-column panels), K across the 64-update partial sums; its largest error at
    most 1.5x that of torch's bmm."""
    if native.library() is None:
        pytest.skip("the C kernels did not build here (no C compiler?)")
    torch.manual_seed(0)
    A, B = torch.randn(p, o, k), torch.randn(p, k, t)
    want = torch.bmm(A.double(), B.double())
    got = native.gemm(A.view(p, o // 8, 8, k).transpose(2, 3).contiguous(), B, torch.empty(p, o, t))
    err, bmm_err = (got - want).abs().max(), (torch.bmm(A, B) - want).abs().max()
    assert err <= 1.5 * bmm_err + 1e-6
    with pytest.raises(ValueError, match="do not chain"):
        native.gemm(A.view(p, o // 8, 8, k), B, torch.empty(p, o, t))


def test_packed_weight_transform_is_the_transform_reordered():
    """transform_weight(packed=True), by the C kernel, puts row 8j+i of each point's (O x I) matrix (torch's
    mm) at [j, :, i]."""
    if native.library() is None:
        pytest.skip("the C kernels did not build here (no C compiler?)")
    torch.manual_seed(0)
    for r in sorted(TILE):
        w = torch.randn(24, 5, r, r)
        U, P = transform_weight(w), transform_weight(w, packed=True)
        assert P.shape == (U.shape[0], 3, 5, 8)
        assert torch.allclose(P, U.view(-1, 3, 8, 5).transpose(2, 3), atol=1e-5)


def test_c_transforms_fall_back_to_torch_ops_when_the_build_fails(monkeypatch, tmp_path, caplog):
    """A failing compiler: library() says why (one warning) and is None; the convolution still runs."""
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("GANTK_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert native.library() is None
        assert "could not build the C CPU kernels (false exited with 1)" in caplog.text
        torch.manual_seed(0)
        x, wt = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
        want = F.conv2d(x, wt, padding=1)
        assert (winograd_conv2d(x, wt, padding=1) - want).abs().max() <= 1e-5 * want.abs().max()
    finally:
        native.library.cache_clear()


def test_only_the_needed_gradients_are_computed():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    wt = torch.randn(2, 3, 3, 3)  # frozen weight, as D's during the generator step
    gx, = torch.autograd.grad(winograd_conv2d(x, wt).sum(), [x])
    want, = torch.autograd.grad(F.conv2d(x, wt).sum(), [x])
    assert (gx - want).abs().max() <= 1e-5 * want.abs().max()


def test_the_interpolation_points_round_less_than_lavins():
    """F(4x4, 3x3) in fp32 over 512 tiles of 256 channels (summed in the transform domain, as the GEMMs do)
    against float64 correlation: with POINTS (0, +-1, 1/2, -2) the largest and the mean error are below
    those with Lavin & Gray's (0, +-1, +-2): measured 5.7e-6 and 6.5e-7 against 1.1e-5 and 8.3e-7."""
    torch.manual_seed(0)
    d, g = torch.randn(512, 256, 6, 6), torch.randn(256, 3, 3) / 48
    ref = torch.stack([torch.stack([(d.double()[:, :, i:i + 3, j:j + 3] * g.double()).sum((1, 2, 3))
                                    for j in range(4)], 1) for i in range(4)], 1)
    errors = []
    for points in (None, LAVIN):
        AT, G, BT = (t.float() for t in matrices(4, 3, points))
        Y = AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)).sum(1) @ AT.T
        errors.append(((Y.double() - ref).abs().max(), (Y.double() - ref).abs().mean()))
    assert errors[0][0] < 0.75 * errors[1][0] and errors[0][1] < 0.9 * errors[1][1]


def test_layouts_and_dtypes():
    """channels_last in, channels_last out; fp16/bf16 inputs are computed in fp32 and returned in their dtype;
    under CPU autocast the output has the autocast dtype, like F.conv2d's."""
    torch.manual_seed(0)
    x, wt = torch.randn(2, 4, 9, 11), torch.randn(5, 4, 3, 3) / 6
    want = F.conv2d(x, wt, padding=1)
    got = winograd_conv2d(x.contiguous(memory_format=torch.channels_last), wt, padding=1)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.allclose(got, want, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        got = winograd_conv2d(x.to(dtype), wt.to(dtype), padding=1)
        ref = F.conv2d(x.to(dtype).float(), wt.to(dtype).float(), padding=1)
        assert got.dtype == dtype and (got.float() - ref).abs().max() <= 2 ** -7 * ref.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert winograd_conv2d(x, wt, padding=1).dtype == torch.bfloat16


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"r in \[3, 4\]"):
        winograd_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 5, 5))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        winograd_conv2d(torch.randn(1, 2, 2, 8), torch.randn(2, 2, 3, 3))


def test_module_follows_weight_updates():
    torch.manual_seed(0)
    conv = WinogradConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1))
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(x).square().sum().backward()
    opt.step()
    want = F.conv2d(x, conv.weight, conv.bias, padding=1)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert (conv(x) - want).abs().max() <= 1e-5 * want.abs().max()


def test_the_shared_workspace_keeps_layers_apart():
    """Without gradients every layer reuses the thread's workspace (weight, blocks); layers of different sizes
    one after the other, and a workspace grown on the way, still give each layer's own convolution; with
    gradients into the input only (frozen weights, as in Gatys style transfer) each layer keeps its own
    transformed weight for the backward."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(c, o, 3, padding=1) for c, o in ((3, 8), (8, 16), (16, 4))]
    fast = [WinogradConv2d.from_conv(c) for c in convs]
    x = torch.randn(2, 3, 20, 20)

    def run(layers, x):
        for layer in layers:
            x = torch.tanh(layer(x))
        return x

    with torch.no_grad():
        want, small = run(convs, x), run(convs, x[:1, :, :9, :9])
        assert torch.allclose(run(fast, x[:1, :, :9, :9]), small, atol=1e-5)
        assert torch.allclose(run(fast, x), want, atol=1e-5)  # the workspace grows
        assert torch.allclose(run(fast, x[:1, :, :9, :9]), small, atol=1e-5)
    for c in convs:
        c.requires_grad_(False)
    xg = x.clone().requires_grad_()
    gx, = torch.autograd.grad(run(fast, xg).square().sum(), [xg])
    xr = x.clone().requires_grad_()
    want_gx, = torch.autograd.grad(run(convs, xr).square().sum(), [xr])
    assert torch.allclose(gx, want_gx, atol=1e-4 * want_gx.abs().max())


def patched_copy(netG: str, ngf: int) -> nn.Module:
    net = define_G(3, 3, ngf, netG, norm="instance")
    patch_winograd(net)
    return net


def test_patch_swaps_the_resnet_convs_and_keeps_keys(caplog):
    """resnet_6blocks: 12 stride-1 3x3 convs (2 per block) become Winograd, the last 7x7 (to 3 channels) and,
    at ngf 4, also the first (to 4) GEMM+shift ones, each taking over the reflect pad before it (an Identity in
    its place); strided convs stay; the InstanceNorm + ReLU chains are fused. The U-Net has none.
    Keys, Parameters and (to rounding) outputs are unchanged."""
    torch.manual_seed(0)
    ref = define_G(3, 3, 4, "resnet_6blocks", norm="instance").eval()
    net = copy.deepcopy(ref)
    params = list(net.parameters())
    assert patch_winograd(net) == 14
    assert list(net.state_dict()) == list(ref.state_dict()) and list(net.parameters()) == params
    winograd = [m for m in net.modules() if isinstance(m, WinogradConv2d)]
    assert len(winograd) == 12 and all(m.padding_mode == "reflect" and m.padding == (1, 1) for m in winograd)
    assert sum(type(m) is nn.ReflectionPad2d for m in net.modules()) == 0
    assert sum(type(m) is nn.Identity for m in net.modules()) == 14 + 11  # the pads and the ReLUs after a norm
    from gantk.acceleration import FusedResnetBlock
    from gantk.kernels import InstanceNormAct
    assert sum(isinstance(m, InstanceNormAct) for m in net.modules()) == 17  # 5 + 2 per block, fused (patch_norms)
    assert sum(isinstance(m, FusedResnetBlock) for m in net.modules()) == 6
    assert [i for i, m in enumerate(net.model) if isinstance(m, ShiftConv2d)] == [1, len(net.model) - 2]
    assert sum(isinstance(m, ShiftConv2d) for m in patched_copy("resnet_6blocks", ngf=8).modules()) == 1
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-4
    assert patch_winograd(define_G(3, 3, 4, "unet_128", norm="batch")) == 0
    from gantk.acceleration import apply_kernels
    with caplog.at_level("WARNING", logger="gantk.train"):
        apply_kernels(define_G(3, 3, 4, "unet_128", norm="batch"), "winograd")
    assert "UnetGenerator has no stride-1 3x3 or 4x4 convolution" in caplog.text


def test_accelerate_shares_the_weights_of_module_swaps_only():
    """The benchmark's winograd model shares the reference's Parameters and buffers (one set of weights, as
    deployed) and leaves the reference unpatched; channels_last converts the weights, so it gets its own."""
    from gantk.acceleration import accelerate
    torch.manual_seed(0)
    ref = define_G(3, 3, 4, "resnet_6blocks", norm="instance").eval()
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = ref(x)
        for parts, shared in ((["winograd"], True), (["channels_last"], False)):
            run, precision = accelerate(ref, parts, torch.device("cpu"))
            net = run if isinstance(run, nn.Module) else run.__closure__[0].cell_contents  # channels_last: a lambda
            assert net is not ref and precision == "fp32"
            ids = {id(p) for p in ref.parameters()}
            assert all((id(p) in ids) == shared for p in net.parameters())
            assert (run(x) - want).abs().max() < 1e-4
    assert not any(isinstance(m, WinogradConv2d) for m in ref.modules())
    assert all(torch.equal(v, before[k]) and v.is_contiguous() for k, v in ref.state_dict().items())


def test_patch_swaps_the_patchgan_stride1_convs():
    """basic PatchGAN (n_layers 3): its last two 4x4 convs have stride 1, the one to 1 channel becomes
    GEMM+shift, the other F(3x3, 4x4); the strided stay."""
    from gantk.models import define_D
    torch.manual_seed(0)
    ref = define_D(3, 8, "basic", norm="instance")
    net = copy.deepcopy(ref)
    assert patch_winograd(net) == 2
    assert isinstance(net.model[-1], ShiftConv2d) and isinstance(net.model[-4], WinogradConv2d)
    x = torch.rand(2, 3, 70, 70, requires_grad=True)
    want = ref(x)
    got = net(x)
    assert got.shape == want.shape and (got - want).abs().max() <= 1e-5 * want.abs().max()
    gw, gx = torch.autograd.grad(got.square().sum(), [net.model[-1].weight, x])
    ww, wx = torch.autograd.grad(want.square().sum(), [ref.model[-1].weight, x])
    assert (gw - ww).abs().max() <= 1e-4 * ww.abs().max() and (gx - wx).abs().max() <= 1e-4 * wx.abs().max()


def test_patch_swaps_the_transformer_net_convs():
    """fast_style's TransformerNet: 10 residual + 2 upsampling 3x3 stride-1 convs (Winograd) and the last 9x9
    to RGB (GEMM+shift); odd sizes kept."""
    from gantk.nn.transformer import TransformerNet
    torch.manual_seed(0)
    ref = TransformerNet().eval()
    net = copy.deepcopy(ref)
    assert patch_winograd(net) == 13
    assert isinstance(net.deconv3.conv2d, ShiftConv2d)
    x = torch.rand(1, 3, 33, 47) * 255
    with torch.no_grad():
        want = ref(x)
        assert (net(x) - want).abs().max() <= 1e-4 * want.abs().max()


def test_exports_of_a_patched_generator_record_the_plain_convolution(tmp_path):
    pytest.importorskip("onnx")
    from gantk.export import export_onnx, spec_for_generator
    from gantk.export.onnx import load_onnx
    torch.manual_seed(0)
    ref = define_G(3, 3, 4, "resnet_6blocks", norm="instance").eval()
    net = copy.deepcopy(ref)
    patch_winograd(net)
    ops = {}
    for name, g in (("plain", ref), ("winograd", net)):
        path = export_onnx(spec_for_generator(copy.deepcopy(g), "cyclegan"), tmp_path / f"{name}.onnx", size=32)
        ops[name] = [n.op_type for n in load_onnx(path).graph.node]
    assert ops["winograd"] == ops["plain"]
    ep = torch.export.export(net, (torch.randn(1, 3, 16, 16),))
    convs = [n for n in ep.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert len(convs) == len([m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])


def test_train_option_kernels_winograd_matches_eager():
    """--kernels winograd (TrainConfig.kernels): the first CycleGAN step's losses and G gradients match eager."""
    from test_train import assert_first_step_matches_eager
    assert_first_step_matches_eager(kernels="winograd")


def test_cli_translate_with_winograd_and_tiles(sample_data, tmp_path):
    """`gantk train/translate --kernels winograd` run; translate (also tiled) gives eager's pictures to 1 level."""
    from conftest import tiny_args

    from gantk.cli import main
    from gantk.io import load_image, pil_to_tensor
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "w", max_iters=1, kernels="winograd")) == 0
    images = {}
    for kernels, extra in (("none", []), ("winograd", []), ("winograd", ["--tile", "32", "--tile_overlap", "8"])):
        out = tmp_path / f"{kernels}{len(extra)}"
        assert main(["translate", "--name", "w", "--checkpoints_dir", str(tmp_path), "--num_test", "2", *extra,
                     "--dataroot", str(sample_data["unaligned"]), "--output", str(out), "--kernels", kernels]) == 0
        images[out.name] = [pil_to_tensor(load_image(f)) for f in sorted(out.glob("images/*_fake.png"))]
    assert len(images["winograd0"]) == 2
    assert all((a - b).abs().max() <= 2 / 255 + 1e-6 for a, b in zip(images["winograd0"], images["none0"]))
    assert len(images["winograd4"]) == 2


def test_train_step_benchmark_runs_the_winograd_config(tmp_path):
    """benchmarks/train_step.py (tiny model): eager and winograd run in their own processes and are reported."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "train_step.py"), "--configs", "winograd",
                          "--size", "32", "--ngf", "4", "--netG", "resnet_6blocks", "--iters", "1", "--warmup", "0",
                          "--parts", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads((tmp_path / "train_step_cpu.json").read_text())
    rows = {r["config"]: r for r in doc["results"]}
    assert set(rows) == {"eager", "winograd"} and rows["winograd"]["winograd"] is True
    assert all(r["status"] == "ok" and r["losses_finite"] and r["median_s"] > 0 for r in rows.values())
    assert "| winograd | ok |" in (tmp_path / "train_step_cpu.md").read_text()
    parts = rows["winograd"]["parts_s"]  # --parts: the profiled iteration and the bound it sets
    assert parts["GEMMs"] > 0 and parts["convolutions"] > 0 and parts["rest"] > 0
    share = (parts["GEMMs"] + parts["convolutions"]) / parts["total"]
    assert rows["winograd"]["bound_speedup"] == pytest.approx(
        rows["eager"]["median_s"] / (rows["winograd"]["median_s"] * share))
    assert "most reachable vs eager fp32" in (tmp_path / "train_step_cpu.md").read_text()


def test_torch_compile_compiles_the_plain_convolution(caplog):
    """Under torch.compile (inductor, fullgraph) a patched PatchGAN traces F.conv2d: outputs and gradients
    match the unpatched eager net, also at a second size (dynamic shapes); --compile with --kernels
    winograd says that winograd then changes nothing."""
    from gantk.models import define_D
    torch.manual_seed(0)
    ref = define_D(3, 4, "basic", norm="instance")
    net = copy.deepcopy(ref)
    assert patch_winograd(net) == 2
    compiled = torch.compile(net, fullgraph=True)
    for size in (40, 48):
        x = torch.rand(1, 3, size, size, requires_grad=True)
        want, got = ref(x), compiled(x)
        assert torch.allclose(got, want, atol=1e-5)
        gw, = torch.autograd.grad(got.sum(), [net.model[-1].weight])
        ww, = torch.autograd.grad(want.sum(), [ref.model[-1].weight])
        assert torch.allclose(gw, ww, atol=1e-4)
    from gantk.models.cyclegan import CycleGANConfig, CycleGANModel
    cfg = CycleGANConfig(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, compile=True, kernels="winograd")
    with caplog.at_level("WARNING", logger="gantk.train"):
        CycleGANModel(cfg).setup()
    assert "winograd changes nothing" in caplog.text


def test_patched_modules_under_autocast():
    """--amp with --kernels winograd: the patched modules (cached transformed weight included) compute in
    fp32 under bf16 autocast and give autocast's dtype (the weight transform once ran in bf16 there and
    the GEMM failed on mixed dtypes)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 4, padding=1))
    ref = copy.deepcopy(net)
    assert patch_winograd(net) == 2
    x = torch.randn(1, 3, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = net(x), ref(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max() <= 0.02 * want.float().abs().max()


def test_cpu_limits_counts_the_generators_gemm_flops():
    """benchmarks/cpu_limits.py's FLOP count for resnet_9blocks at 64 px against hand-computed values: direct
    convs equal torch's FLOP counter; Winograd F(m x m, 3x3) replaces each of the 18 residual-block convs
    (256 ch, 16x16 output) by ceil(16/m)^2 tiles of (m+2)^2 products per channel pair."""
    from conftest import load_benchmark_script
    from gantk.bench import flops_per_image
    cl = load_benchmark_script("cpu_limits")
    net = define_G(3, 3, 64, "resnet_9blocks", norm="instance").eval()
    x = torch.zeros(1, 3, 64, 64)
    direct = cl.gemm_gflops(net, x, None)
    assert direct == pytest.approx(flops_per_image(net, (x,)) / 1e9, rel=1e-3)
    block = 2 * 16 * 16 * 256 * 256 * 9 / 1e9
    for m in (4, 6):
        wino = 2 * math.ceil(16 / m) ** 2 * (m + 2) ** 2 * 256 * 256 / 1e9
        assert cl.gemm_gflops(net, x, m) == pytest.approx(direct - 18 * (block - wino), rel=1e-9)


def test_cpu_limits_reports_every_size(tmp_path, monkeypatch):
    """benchmarks/cpu_limits.py --sizes 32 64 (ngf 8, GEMM rates stubbed to 100 GFLOP/s): a row per size with
    eager and winograd times, the growth column their ratios, the bound FLOPs / 100 GFLOP/s, and winograd's
    time by parts with its GEMMs' FLOPs counted by hand and the design's bound (GEMMs + other convs)."""
    import json
    from conftest import load_benchmark_script
    cl = load_benchmark_script("cpu_limits")
    monkeypatch.setattr(cl, "gemm_rates", lambda: {"mm": 100.0})
    assert cl.main(["--sizes", "32", "64", "--ngf", "8", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cpu_limits.json").read_text())["sizes"]
    assert [r["size"] for r in rows] == [32, 64] and all(r["eager_ms"] > 0 and r["winograd_ms"] > 0 for r in rows)
    assert all(r["eager_kept_heap_ms"] > 0 and r["paired_speedup"] > 0 for r in rows)
    assert rows[1]["bound_ms"]["direct"] == pytest.approx(10 * rows[1]["gemm_gflop"]["direct"])
    table = (tmp_path / "cpu_limits.md").read_text()
    growth = f"{rows[1]['eager_ms'] / rows[0]['eager_ms']:.2f}, {rows[1]['winograd_ms'] / rows[0]['winograd_ms']:.2f}"
    assert (f"| 64 | {rows[1]['eager_ms']:.1f} | {rows[1]['eager_kept_heap_ms']:.1f} | {rows[1]['winograd_ms']:.1f} |"
            in table and growth in table)
    most = rows[1]["eager_ms"] / (10 * rows[1]["gemm_gflop"]["F(6x6,3x3)"])
    assert next(line for line in table.splitlines() if line.startswith("| 64 |")).endswith(f"| {most:.2f}x |")
    # the parts: 18 residual-block convs of 32 channels on 16 x 16 maps, 4 x 4 tiles of F(4x4, 3x3), 36 GEMMs each
    parts = rows[1]["winograd_parts_ms"]
    assert parts["gemm_gflop"] == pytest.approx(18 * 2 * 36 * 32 * 32 * 16 / 1e9)
    timed = ("gemm", "weight transforms", "other convolutions", "norms", "total") + ("tile transforms",) * (
        native.library() is not None)
    assert all(parts[k] > 0 for k in timed)  # the torch-op transforms (no compiler) are not timed apart
    assert parts["rest"] == pytest.approx(parts["total"] - sum(parts[k] for k in (
        "gemm", "tile transforms", "weight transforms", "other convolutions", "norms")))
    assert rows[1]["design_bound_ms"] == pytest.approx(parts["gemm"] + parts["other convolutions"])
    assert "Where a winograd forward spends its time" in table
