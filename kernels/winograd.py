"""Winograd convolution, the CPU speed path: F(4x4, 3x3) for the generators' 3x3 convolutions and
F(3x3, 4x4) for PatchGAN's stride-1 4x4 ones.

A stride-1 3x3 convolution computes each 4x4 output tile from a 6x6 input tile with 36 multiplies per
(input, output channel) pair instead of 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016; interpolation points 0, +-1, +-2, inf); a 4x4 kernel gets 3x3 tiles from the same 6x6
ones (36 multiplies instead of 144). The matrices are built from the points (`matrices`). In the
transform domain the sum over input channels is, for each of the 36 tile positions, one GEMM
(Cout x Cin) @ (Cin x tiles): the layer becomes 36 dense GEMMs with 4x fewer multiply-adds than the
direct convolution, plus transforms. That matters where fp32 GEMM throughput bounds the run: CPU training
and inference of the ResNet generators, whose residual blocks are pairs of 256-channel 3x3 convolutions.
(cuDNN already picks Winograd on NVIDIA GPUs, so there this path brings nothing.)

The tile transforms run in C (`native`, compiled on first use): one pass gathers the tiles straight from
the unpadded input (reflect or zero padding in the index math, so a ReflectionPad2d before the conv is
folded in) and writes the transform domain; one pass transforms back and writes the output (or, in the
backward, overlap-adds the tiles and folds the padding back). Without gradients the C forward runs over
blocks of tile rows, input transform, GEMMs and output transform per block, so that a large map's
transform domain stays in the L3 cache (BLOCK_BYTES: a 256-px image's 64 x 64 maps fit whole; at 512 px
they would be 2 x 38 MB), in one per-thread workspace that every layer reuses, with the transformed weight
(recomputed at each call rather than cached: 170 MB less for resnet_9blocks, ~7% slower at 256 px). There, on
CPUs with AVX-512, the GEMMs are gantk's C kernel (`native.gemm`: 182 GFLOP/s against torch's bmm's 164 on the
residual blocks' GEMMs on a 2-core Zen 4), the weight transformed straight into the layout it takes.
Without a C compiler the same maths runs as torch ops: a strided convolution with
the Kronecker matrix's rows as filters, matmuls and strided adds.
The backward stays in the transform domain: the input gradient is the transposed GEMM followed by the
transposed input transform, the weight gradient a GEMM against the transformed input saved by the forward
(2.25x the input's size). Everything runs in fp32 (the transforms amplify fp16/bf16 rounding); results differ
from direct convolution by rounding only, ~1e-5 relative.
"""
from __future__ import annotations

import functools
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels import native
from gantk.kernels.shift_conv import FastConv2d, fp32_conv, pad2d, plain_stride1_conv, unpad

# finite interpolation points, in order of use; infinity is the last. F(4x4, 3x3) takes the first five:
# with 1/2 and -2 instead of Lavin & Gray's +-2, resnet_9blocks' outputs came 30-40% closer to eager's (largest
# error; mean 28-31%) at 256 and 1024 px, as the Winograd error analyses predict for mixed points
POINTS = (0, 1, -1, 1 / 2, -2, 2, -1 / 2)
ONE = POINTS.index(1)  # A^T's column at point 1 is all ones
TILE = {3: 4, 4: 3}  # output tile m per kernel size r: F(4x4, 3x3) and F(3x3, 4x4), both on 6x6 input tiles
# (8x8 input tiles, F(6x6, 3x3) and F(5x5, 4x4), measured 5-10% slower on the generators' layers)
BLOCK_BYTES = 24 << 20  # transform-domain bytes (input and product) per block of the forward, to stay in L3 cache


@functools.cache
def matrices(m: int, r: int, points: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1-D Toom-Cook matrices of F(m, r) in float64: A^T (m x n), G (n x r), B^T (n x n), n = m + r - 1,
    with y = A^T [(G g) * (B^T d)] the correlation of d (n) with g (r). A^T and G evaluate at the first n-1
    of `points` (default POINTS) and infinity (Lagrange-scaled G); B^T solves the identity exactly (least
    squares, residual checked)."""
    n = m + r - 1
    points = (points or POINTS)[:n - 1]
    pts = torch.tensor(points, dtype=torch.float64)
    AT = torch.zeros(m, n, dtype=torch.float64)
    G = torch.zeros(n, r, dtype=torch.float64)
    AT[:, :n - 1] = pts ** torch.arange(m, dtype=torch.float64)[:, None]
    scale = torch.stack([torch.prod(p - pts[pts != p]) for p in pts])
    G[:n - 1] = pts[:, None] ** torch.arange(r, dtype=torch.float64) / scale[:, None]
    AT[m - 1, n - 1] = G[n - 1, r - 1] = 1
    # y_i = sum_{j,k,l} AT[i,j] G[j,k] BT[j,l] g_k d_l must equal sum_k g_k d_{i+k}
    C = torch.einsum("ij,jk->ikj", AT, G).reshape(m * r, n)
    target = torch.zeros(m, r, n, dtype=torch.float64)
    for i in range(m):
        for k in range(r):
            target[i, k, i + k] = 1
    BT = torch.linalg.lstsq(C, target.reshape(m * r, n)).solution
    BT[BT.abs() < 1e-12] = 0  # exact zeros where the solver left rounding noise
    if not torch.allclose(C @ BT, target.reshape(m * r, n), atol=1e-9):
        raise ValueError(f"no Winograd F({m}, {r}) on points {points}")
    return AT, G, BT


_MATS: dict = {}


def transforms(r: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms of F(m x m, r x r), m = TILE[r], as Kronecker products on flattened tiles:
    output (m^2 x n^2), kernel (n^2 x r^2), input (n^2 x n^2), fp32 on `device`."""
    key = (r, torch.device(device))
    if key not in _MATS:
        _MATS[key] = tuple(torch.kron(t, t).float().to(key[1]) for t in matrices(TILE[r], r))
    return _MATS[key]


@functools.cache
def line_transforms(r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1-D matrices the C transforms apply on both sides of a tile, fp32 contiguous on the CPU:
    A^T (output), A (its adjoint), B^T (input), B (its adjoint)."""
    AT, _, BT = (t.float() for t in matrices(TILE[r], r))
    return AT.contiguous(), AT.T.contiguous(), BT.contiguous(), BT.T.contiguous()


@functools.cache
def _G(r: int) -> torch.Tensor:
    """The kernel transform G (n x r) in fp32, for the C weight transform."""
    return matrices(TILE[r], r)[1].float().contiguous()


def transform_weight(weight: torch.Tensor, out: torch.Tensor | None = None, packed: bool = False) -> torch.Tensor:
    """OIHW r x r weight -> (n^2, O, I), in fp32 (also under autocast); written into `out` (flat, at least
    that many elements) when given. `packed`: (n^2, O/8, I, 8) instead, the layout `native.gemm` takes, by
    the C kernel (only used where it is built)."""
    o, i, r = weight.shape[:3]
    KG = transforms(r, weight.device)[1]
    q, rows = KG.shape[0], native.GEMM_ROWS
    if packed:
        U = torch.empty(q, o // rows, i, rows) if out is None else out[:q * o * i].view(q, o // rows, i, rows)
        return native.weight_packed(weight.detach().float().contiguous(), _G(r), U)
    with torch.autocast(weight.device.type, enabled=False):
        out = None if out is None else out[:q * o * i].view(q, o * i)
        return torch.mm(KG, weight.detach().float().reshape(o * i, r * r).T, out=out).view(q, o, i)


_WORKSPACE = threading.local()


def workspace(slot: str, numel: int, like: torch.Tensor) -> torch.Tensor:
    """A flat fp32 buffer of at least `numel` elements on like's device, kept per thread and slot and grown
    when too small: the forward without gradients takes its transformed weight and transform-domain blocks
    from here, so layer after layer reuses the same pages instead of allocating (page faults, a fragmented
    heap that keeps 100-200 MB more than eager) or caching every layer's transformed weight (170 MB for
    resnet_9blocks)."""
    buffers = _WORKSPACE.__dict__.setdefault("buffers", {})
    key = (slot, like.device)
    if key not in buffers or buffers[key].numel() < numel:
        buffers.pop(key, None)  # free the old one first
        buffers[key] = torch.empty(numel, dtype=torch.float32, device=like.device)
    return buffers[key]


def _tiles(h: int, w: int, m: int, r: int) -> tuple[int, int]:
    """Output tiles along H and W for an unpadded (h, w) input."""
    return -(-(h - r + 1) // m), -(-(w - r + 1) // m)


def _blocks(n: int, th: int, tw: int, fit: int) -> tuple[int, int]:
    """(images, tile rows) per block of the forward for at most `fit` tiles (at least one row): whole
    images where one fits, else rows of one image in blocks of equal size."""
    if fit >= th * tw:
        return min(n, fit // (th * tw)), th
    rows = max(1, fit // tw)
    return 1, -(-th // -(-th // rows))


def _pad_end(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`t` zero-padded at the bottom and right to (h, w) (no copy when it already is that size)."""
    return t if t.shape[2:] == (h, w) else F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2]))


def _to_tiles(t: torch.Tensor, k: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Transform every `size` x `size` tile at `stride` of NCHW `t` by the Kronecker matrix k (q x size^2)
    -> (q, C, N*tiles), a strided view for N = 1 (bmm takes it as it is). A strided convolution with k's rows
    as filters gathers and transforms in one pass (several times faster than gathering, then multiplying)."""
    n, c, h, w = t.shape
    q = k.shape[0]
    v = F.conv2d(t.reshape(n * c, 1, h, w), k.view(q, 1, size, size), stride=stride)
    return v.view(n, c, q, -1).permute(2, 1, 0, 3).reshape(q, c, -1)


def _overlap_add(g: torch.Tensor, m: int) -> torch.Tensor:
    """Tiles g (a, a, C, N, th, tw), placed at stride m < a and summed where they overlap -> (N, C, m*(th+1),
    m*(tw+1)). Each tile overlaps only its next neighbours (a - m <= m), so four strided adds do it (several
    times faster than F.fold)."""
    a, _, c, n, th, tw = g.shape
    e = a - m
    src = g.permute(3, 2, 4, 0, 5, 1)  # (N, C, th, a, tw, a)
    out = g.new_empty(n, c, th + 1, m, tw + 1, m)
    out[:, :, :th, :, :tw] = src[:, :, :, :m, :, :m]
    out[:, :, th].zero_()
    out[:, :, :th, :, tw].zero_()
    out[:, :, 1:, :e, :tw] += src[:, :, :, m:, :, :m]
    out[:, :, :th, :, 1:, :e] += src[:, :, :, :m, :, m:]
    out[:, :, 1:, :e, 1:, :e] += src[:, :, :, m:, :, m:]
    return out.view(n, c, m * (th + 1), m * (tw + 1))


def _blocked_forward(x, U, bias, r, pad, reflect, th, tw, ho, wo, nb, rows, keep, o):
    """The C forward, `rows` tile rows of `nb` images at a time: input transform, GEMMs and output transform
    of one block before the next, so a large map's transform domain is never written out whole (at 512 px
    the 256-channel maps' would be 38 MB, more than the L3 cache). The blocks live in the thread's
    `workspace`, except the transformed input V when `keep` (one block then holds every tile). The GEMMs are
    `native.gemm`'s when U is packed (4-D), else torch's bmm. -> (output, V when keep, else None)."""
    n, c = x.shape[:2]
    q2 = U.shape[0]
    AT, _, BT, _ = line_transforms(r)
    V = x.new_empty(q2 * c * n * th * tw) if keep else workspace("V", q2 * c * nb * rows * tw, x)
    M = workspace("M", q2 * o * nb * rows * tw, x)
    y = x.new_empty(n, o, ho, wo)
    for b in range(0, n, nb):
        for i0 in range(0, th, rows):
            k, nk = min(rows, th - i0), min(nb, n - b)
            t = nk * k * tw
            Vb = native.tiles_in(x[b:b + nk], BT, TILE[r], pad, reflect, k, tw, i0, out=V[:q2 * c * t].view(q2, c, t))
            Mb = (native.gemm if U.dim() == 4 else torch.bmm)(U, Vb, out=M[:q2 * o * t].view(q2, o, t))
            if bias is not None:  # M at point (1, 1) adds to every output of its tile (A^T's column there is ones)
                Mb[ONE * (TILE[r] + r)] += bias.float().view(o, 1)
            native.tiles_out_rows(Mb, AT, i0, k, y[b:b + nk])
    return y, (V.view(q2, c, -1) if keep else None)


class _Winograd(torch.autograd.Function):
    """Stride-1 r x r convolution of fp32 NCHW x, padded by `pad` (reflect or zeros), with transformed
    weight U. `keep`: save the transformed input for the weight gradient (else the forward runs block by
    block). The tile transforms are the C ones (`native`) where they built, else torch ops."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad, reflect, U, keep):
        n, c, h, w = x.shape
        o, r = weight.shape[0], weight.shape[2]
        m = TILE[r]
        a = m + r - 1
        ho, wo = h + 2 * pad - r + 1, w + 2 * pad - r + 1
        th, tw = _tiles(h + 2 * pad, w + 2 * pad, m, r)
        use_c = native.library() is not None
        if use_c:
            nb, rows = (n, th) if keep else _blocks(n, th, tw, BLOCK_BYTES // (4 * a * a * (c + o)))
            y, V = _blocked_forward(x, U, bias, r, pad, reflect, th, tw, ho, wo, nb, rows, keep, o)
        else:
            V = _to_tiles(_pad_end(pad2d(x, pad, reflect), m * th + r - 1, m * tw + r - 1), transforms(r, x.device)[2], a, m)
            M = torch.bmm(U, V)
            if bias is not None:
                M[ONE * (a + 1)] += bias.float().view(o, 1)
            y = (transforms(r, x.device)[0] @ M.view(a * a, -1)).view(m, m, o, n, th, tw)
            y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, o, m * th, m * tw)[:, :, :ho, :wo]
        ctx.save_for_backward(U, V if keep else None)  # freed with the graph (at once under no_grad)
        ctx.shape = (n, c, h, w, r, pad, reflect, th, tw, use_c)
        return y

    @staticmethod
    def backward(ctx, gy):
        U, V = ctx.saved_tensors
        n, c, h, w, r, pad, reflect, th, tw, use_c = ctx.shape
        m = TILE[r]
        a = m + r - 1
        KA, KG, KB = transforms(r, gy.device)
        _, A, _, B = line_transforms(r)
        gy = gy.float().contiguous()
        if use_c:  # gradient of A^T . A
            gM = native.tiles_in(gy, A, m, 0, False, th, tw)
        else:
            gM = _to_tiles(_pad_end(gy, m * th, m * tw), KA.T.contiguous(), m, m)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # B . B^T of each tile, tiles overlap-added, padding folded back
            gV = torch.bmm(U.transpose(1, 2), gM)
            if use_c:
                gx = native.tiles_out(gV, B, m, pad, reflect, n, th, tw, h, w)
            else:
                gd = (KB.T @ gV.view(a * a, -1)).view(a, a, c, n, th, tw)
                gx = unpad(_overlap_add(gd, m)[:, :, :h + 2 * pad, :w + 2 * pad], pad, reflect)
        if ctx.needs_input_grad[1]:
            gU = torch.bmm(gM, V.transpose(1, 2))
            gw = (KG.T @ gU.view(a * a, -1)).view(r, r, *U.shape[1:]).permute(2, 3, 0, 1)
        if ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0,
                    padding_mode: str = "zeros") -> torch.Tensor:
    """F.conv2d(F.pad(x, padding, padding_mode), weight, bias) for a 3x3 or 4x4 OIHW weight (stride 1), by
    Winograd F(4x4, 3x3) or F(3x3, 4x4); padding_mode "zeros" or "reflect". The output has x's dtype (the
    autocast dtype under autocast) and layout. The weight is transformed at every call (0.6 ms for a 256 x 256
    3x3 conv here); without gradients into the thread's `workspace`."""
    r = weight.shape[-1]
    if (weight.dim() != 4 or r not in TILE or weight.shape[2] != r or x.dim() != 4
            or weight.shape[1] != x.shape[1]):
        raise ValueError(f"winograd_conv2d: expected NCHW input and an (O, {x.shape[1]}, r, r) weight with r in "
                         f"{sorted(TILE)}, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if padding_mode not in ("zeros", "reflect"):
        raise ValueError(f"winograd_conv2d: padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
    reflect = padding_mode == "reflect"
    if reflect and padding >= min(x.shape[2:]):
        raise ValueError(f"winograd_conv2d: reflect padding {padding} needs an input larger than that, got "
                         f"{x.shape[2]}x{x.shape[3]}")
    grad = torch.is_grad_enabled()
    keep = grad and weight.requires_grad  # the weight gradient needs the transformed input
    o, i = weight.shape[:2]
    backward = grad and (keep or x.requires_grad)  # a backward keeps U (unpacked, for bmm)
    packed = not backward and o % native.GEMM_ROWS == 0 and native.gemm_fast()
    U = transform_weight(weight, None if backward else workspace("U", (r + TILE[r] - 1) ** 2 * o * i, x), packed)
    return fp32_conv(_Winograd, "winograd_conv2d", x, weight, bias, padding, reflect, U, keep)


class WinogradConv2d(FastConv2d):
    """nn.Conv2d (3x3 or 4x4, stride 1, zero or reflect padding) computed by `winograd_conv2d`; exports and
    torch.compile record the plain convolution (compiling the Winograd ops took over 200 s for a CycleGAN
    step's first iteration and then ran slower than eager Winograd; inductor also failed to lower their
    backward with dynamic shapes)."""

    def _fast(self, x, weight, bias):
        return winograd_conv2d(x, weight, bias, self.padding[0], self.padding_mode)


def winograd_applicable(m: nn.Module) -> bool:
    """A plain nn.Conv2d that Winograd computes here: 3x3 or 4x4, stride 1, undilated, ungrouped, equal
    zero padding."""
    return plain_stride1_conv(m) and m.kernel_size[0] in TILE
