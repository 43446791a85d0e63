"""Winograd F(4x4, 3x3) convolution: the CPU speed path for the generators' 3x3 convolutions.

A stride-1 3x3 convolution computes each 4x4 output tile from a 6x6 input tile with 36 multiplies per
(input, output channel) pair instead of 144 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016; interpolation points 0, +-1, +-2, inf). In the transform domain the sum over input
channels is, for each of the 36 tile positions, one GEMM (Cout x Cin) @ (Cin x tiles), so the layer
becomes 36 dense GEMMs with 4x fewer multiply-adds than the direct convolution, plus transforms that
are themselves small GEMMs. That matters where fp32 GEMM throughput bounds the run: CPU training and
inference of the ResNet generators, whose residual blocks are pairs of 256-channel 3x3 convolutions.
(cuDNN already picks Winograd on NVIDIA GPUs, so there this path brings nothing.)

The backward stays in the transform domain: the input gradient is the transposed GEMM followed by the
transposed input transform (tiles overlap-added), the weight gradient a GEMM against the transformed
input saved by the forward (2.25x the input's size). Everything runs in fp32 (the transforms amplify
fp16/bf16 rounding); results differ from direct convolution by rounding only, ~1e-5 relative.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels.runtime import dense, exporting, memory_format

M, R = 4, 3  # output tile, kernel size
A = M + R - 1  # input tile (6)
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_MATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def transforms(device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as Kronecker products on flattened tiles: output (16x36), kernel (36x9),
    input (36x36), fp32 on `device`."""
    device = torch.device(device)
    if device not in _MATS:
        _MATS[device] = tuple(torch.kron(t, t).float().to(device) for t in
                              (torch.tensor(m, dtype=torch.float64) for m in (_AT, _G, _BT)))
    return _MATS[device]


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """OIHW 3x3 weight -> (36, O, I), in fp32."""
    o, i = weight.shape[:2]
    return (transforms(weight.device)[1] @ weight.detach().float().reshape(o * i, R * R).T).view(A * A, o, i)


def _tiles(h: int, w: int) -> tuple[int, int]:
    """Output tiles along H and W for an unpadded (h, w) input."""
    return -(-(h - 2) // M), -(-(w - 2) // M)


def _pad_end(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`t` zero-padded at the bottom and right to (h, w) (no copy when it already is that size)."""
    return t if t.shape[2:] == (h, w) else F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2]))


def _overlap_add(t: torch.Tensor) -> torch.Tensor:
    """(N, C, th, tw, 6, 6) tiles laid at stride 4 -> (N, C, 4th+2, 4tw+2), summing where they overlap."""
    n, c, th, tw = t.shape[:4]
    t = t.permute(0, 1, 2, 4, 3, 5)  # N C th 6 tw 6
    rows = t.new_zeros(n, c, th + 1, M, tw, A)
    rows[:, :, :th] = t[:, :, :, :M]
    rows[:, :, 1:, :A - M] += t[:, :, :, M:]
    rows = rows.view(n, c, M * th + M, tw, A)[:, :, :M * th + 2]
    out = t.new_zeros(n, c, M * th + 2, tw + 1, M)
    out[..., :tw, :] = rows[..., :M]
    out[..., 1:, :A - M] += rows[..., M:]
    return out.view(n, c, M * th + 2, M * tw + M)[..., :M * tw + 2]


class _Winograd(torch.autograd.Function):
    """Valid (unpadded) stride-1 3x3 convolution of fp32 NCHW x with transformed weight U."""

    @staticmethod
    def forward(ctx, x, weight, bias, U):
        n, c, h, w = x.shape
        o = U.shape[1]
        th, tw = _tiles(h, w)
        KA, _, KB = transforms(x.device)
        xp = _pad_end(x, M * th + 2, M * tw + 2)
        d = xp.unfold(2, A, M).unfold(3, A, M).permute(4, 5, 1, 0, 2, 3).reshape(A * A, c * n * th * tw)
        V = (KB @ d).view(A * A, c, n * th * tw)
        y = (KA @ torch.bmm(U, V).view(A * A, -1)).view(M, M, o, n, th, tw)
        y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, o, M * th, M * tw)
        if bias is not None:
            y += bias.float().view(1, o, 1, 1)
        ctx.save_for_backward(U, V)  # freed with the graph (at once under no_grad)
        ctx.shape = (n, c, h, w, o, th, tw)
        return y[:, :, :h - 2, :w - 2]

    @staticmethod
    def backward(ctx, gy):
        U, V = ctx.saved_tensors
        n, c, h, w, o, th, tw = ctx.shape
        KA, KG, KB = transforms(gy.device)
        g = _pad_end(gy.float(), M * th, M * tw)
        g = g.view(n, o, th, M, tw, M).permute(3, 5, 1, 0, 2, 4).reshape(M * M, o * n * th * tw)
        gM = (KA.T @ g).view(A * A, o, n * th * tw)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gd = (KB.T @ torch.bmm(U.transpose(1, 2), gM).view(A * A, -1)).view(A, A, c, n, th, tw)
            gx = _overlap_add(gd.permute(3, 2, 4, 5, 0, 1))[:, :, :h, :w]
        if ctx.needs_input_grad[1]:
            gU = torch.bmm(gM, V.transpose(1, 2))
            gw = (KG.T @ gU.view(A * A, o * c)).view(R, R, o, c).permute(2, 3, 0, 1)
        if ctx.needs_input_grad[2]:
            gb = gy.sum((0, 2, 3))
        return gx, gw, gb, None


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0,
                     U: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride=1, padding=padding) for a 3x3 OIHW weight, by Winograd F(4x4, 3x3).
    U: `transform_weight(weight)` when the caller caches it. The output has x's dtype (the autocast dtype
    under autocast) and layout."""
    if weight.shape[2:] != (R, R) or x.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"winograd_conv3x3: expected NCHW input and an (O, {x.shape[1]}, 3, 3) weight, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    fmt = memory_format(x)
    if padding:
        x = F.pad(x, (padding,) * 4)
    if min(x.shape[2:]) < R:
        raise ValueError(f"winograd_conv3x3: input {x.shape[2]}x{x.shape[3]} (padded) is smaller than the kernel")
    with torch.autocast(x.device.type, enabled=False):
        y = _Winograd.apply(x.float(), weight.float(), bias, transform_weight(weight) if U is None else U)
    return dense(y.to(dtype), fmt)


class WinogradConv2d(nn.Conv2d):
    """nn.Conv2d (3x3, stride 1, zero padding) computed by `winograd_conv3x3`; exports record the plain
    convolution. The transformed weight is cached until the weight changes (an optimizer step)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WinogradConv2d":
        """A module sharing `conv`'s Parameters."""
        new = cls(conv.in_channels, conv.out_channels, R, padding=conv.padding, bias=conv.bias is not None,
                  device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def _transformed(self, weight: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return transform_weight(weight)
        key = (weight._version, weight.data_ptr(), weight.device, weight.dtype)
        if getattr(self, "_cache_key", None) != key:
            self._cache_key, self._cache = key, transform_weight(weight)
        return self._cache

    def _conv_forward(self, x, weight, bias):
        if exporting():
            return super()._conv_forward(x, weight, bias)
        return winograd_conv3x3(x, weight, bias, self.padding[0], self._transformed(weight))


def winograd_applicable(m: nn.Module) -> bool:
    """A plain nn.Conv2d that Winograd F(4x4, 3x3) computes: 3x3, stride 1, undilated, ungrouped, equal zero padding."""
    return (type(m) is nn.Conv2d and m.kernel_size == (R, R) and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.groups == 1 and m.padding_mode == "zeros" and m.padding[0] == m.padding[1])


def patch_winograd(model: nn.Module) -> int:
    """Swap every applicable 3x3 nn.Conv2d of `model` for a WinogradConv2d in place (same Parameters and
    state-dict keys); returns how many were swapped."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None and winograd_applicable(child):
                parent._modules[name] = WinogradConv2d.from_conv(child)
                swapped += 1
    return swapped
