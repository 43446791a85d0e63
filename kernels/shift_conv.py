"""GEMM-and-shift convolution for layers with few output channels, a CPU speed path (`--kernels winograd`).

oneDNN computes a convolution with 1-4 output channels (the generators' last 7x7 conv to RGB, PatchGAN's
last 4x4 conv to one logit) far below its GEMM speed: its kernels block 8-16 output channels. Here the
layer is one dense GEMM instead, Z = W (O*k*k x C) @ X (C x H*W), over the whole flattened input, followed
by a shift-and-add of Z's k*k rows per output channel: with the image flattened row by row, tap (a, b) is
a shift by a*W + b, so every add is a contiguous slice (columns past the output's width are computed
and cropped). The backward is the same GEMMs transposed: the shifted copies of the output gradient form
gZ, then gx = W^T gZ and gW = gZ X^T. The input is cut into chunks of about CHUNK positions (whole padded
rows in the forward) so that Z stays a few MB (one 40 MB Z would also come from fresh, page-faulting memory
on every call). Reflect or zero padding: without gradients each chunk's rows are padded as they are taken,
so a ReflectionPad2d before the conv is folded in and the padded copy of the whole input (271 MB before the
generators' last conv at 1024 px) is never made; the backward takes the padded input saved by the forward.
Same multiply-adds as the direct convolution, in fp32; results differ by rounding only.

Where the C kernels are built, the forward is instead a direct convolution in C (`native.conv_few`, conv.c),
vectorised along output pixels, on chunks of padded rows: the generators' last conv (64 -> 3, 7x7) ran
1.7x faster at 1024 px than GEMM+shift, whose k*k shifted adds each pass over the output (589 -> 342 ms in
the resnet_9blocks forward).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels import native
from gantk.kernels.runtime import dense, exporting, memory_format

MAX_OUT = 4  # layers with at most this many output channels (oneDNN is efficient above)
CHUNK = 16384  # input positions per GEMM (Z: O*k*k x CHUNK)
FEW_BYTES = 16 << 20  # padded input per call of the C kernel without gradients (a chunk of rows of every image)


def _taps(k: int, row: int):
    """(a, b, offset) of each tap of a k x k kernel on an image with rows of `row` flattened."""
    return [(a, b, a * row + b) for a in range(k) for b in range(k)]


def padded_rows(x: torch.Tensor, r0: int, r1: int, pad: int, reflect: bool) -> torch.Tensor:
    """Rows r0 .. r1-1 of x (N, C, H, W) padded by `pad` on every side (reflect or zeros), without padding
    the rest."""
    h = x.shape[2]
    if reflect:
        rows = [abs(r - pad) if r < pad else min(r - pad, 2 * (h - 1) - (r - pad)) for r in range(r0, r1)]
        block = x[:, :, rows[0]:rows[-1] + 1] if rows == list(range(rows[0], rows[-1] + 1)) else x[:, :, rows]
        return F.pad(block, (pad, pad, 0, 0), mode="reflect")
    lo, hi = min(max(r0 - pad, 0), h), min(max(r1 - pad, 0), h)
    top, bottom = max(0, min(r1, pad) - r0), max(0, r1 - max(r0, h + pad))  # rows above and below the input
    return F.pad(x[:, :, lo:hi], (pad, pad, top, bottom))


def pad2d(x: torch.Tensor, pad: int, reflect: bool) -> torch.Tensor:
    """x (N, C, H, W) padded by `pad` on every side, reflect or zeros (x itself when pad is 0)."""
    return F.pad(x, (pad,) * 4, mode="reflect" if reflect else "constant") if pad else x


def unpad(g: torch.Tensor, pad: int, reflect: bool) -> torch.Tensor:
    """The gradient of F.pad(x, pad, reflect or zeros) w.r.t. x, from the padded gradient g."""
    if not pad:
        return g
    n, c, h, w = g.shape
    if not reflect:
        return g[:, :, pad:h - pad, pad:w - pad]
    shape = g.new_zeros(()).expand(n, c, h - 2 * pad, w - 2 * pad)  # only its shape is read
    return torch.ops.aten.reflection_pad2d_backward(g, shape, [pad] * 4)


class _ShiftConv(torch.autograd.Function):
    """Stride-1 convolution of fp32 NCHW x, padded by `pad` (reflect or zeros), by an (O, C, k, k) weight.
    Without gradients the padded input is made a chunk of rows at a time (no padded copy of the whole)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad, reflect, keep):
        n, c, h0, w0 = x.shape
        hp, wp = h0 + 2 * pad, w0 + 2 * pad
        o, k = weight.shape[0], weight.shape[2]
        h, length = hp - k + 1, hp * wp
        W = weight.permute(0, 2, 3, 1).reshape(o * k * k, c)
        xf = pad2d(x, pad, reflect).reshape(n, c, length) if keep else None
        ctx.save_for_backward(xf, W)
        ctx.shape = (hp, wp, k, pad, reflect)
        if o <= native.CONV_FEW_OUT and native.usable(x, weight, bias):  # the direct C kernel
            y = x.new_empty(n, o, h, wp - k + 1)
            if keep:
                return native.conv_few(xf.view(n, c, hp, wp), weight, bias, y)
            rows = max(1, FEW_BYTES // (4 * n * c * wp))
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                native.conv_few(padded_rows(x, r0, r1 + k - 1, pad, reflect), weight, bias, y[:, :, r0:r1])
            return y
        rows = max(1, CHUNK // wp)
        y = x.new_zeros(n, o, h * wp)  # y[p] = sum over taps of Z[tap, p + offset]
        for r0 in range(0, hp, rows):
            q0, q1 = r0 * wp, min(hp, r0 + rows) * wp
            chunk = xf[:, :, q0:q1] if keep else padded_rows(x, r0, q1 // wp, pad, reflect).reshape(n, c, q1 - q0)
            Z = torch.matmul(W, chunk).view(n, o, k, k, q1 - q0)
            for a, b, off in _taps(k, wp):
                lo, hi = max(q0 - off, 0), min(q1 - off, h * wp)
                if lo < hi:
                    y[:, :, lo:hi] += Z[:, :, a, b, lo + off - q0:hi + off - q0]
        y = y.view(n, o, h, wp)[..., :wp - k + 1]
        if bias is not None:
            y = y + bias.float().view(1, o, 1, 1)
        return y.contiguous()

    @staticmethod
    def backward(ctx, gy):
        xf, W = ctx.saved_tensors  # (N, C, hp*wp), (O*k*k, C)
        hp, wp, k, pad, reflect = ctx.shape
        n, c, length = xf.shape
        o, h = W.shape[0] // (k * k), hp - k + 1
        gyf = F.pad(gy.float(), (0, k - 1)).reshape(n, o, h * wp)  # rows of the padded width
        want_x, want_w = ctx.needs_input_grad[:2]
        gx = xf.new_empty(n, c, length) if want_x else None
        gW = xf.new_zeros(o * k * k, c) if want_w else None
        for q0 in range(0, length, CHUNK):
            q1 = min(length, q0 + CHUNK)
            gZ = xf.new_zeros(n, o, k, k, q1 - q0)  # gZ[tap, q] = gy[q - offset]
            for a, b, off in _taps(k, wp):
                lo, hi = max(q0, off), min(q1, h * wp + off)
                if lo < hi:
                    gZ[:, :, a, b, lo - q0:hi - q0] = gyf[:, :, lo - off:hi - off]
            gZ = gZ.view(n, o * k * k, q1 - q0)
            if want_x:
                gx[:, :, q0:q1] = W.T @ gZ
            if want_w:
                gW += (gZ @ xf[:, :, q0:q1].transpose(1, 2)).sum(0)
        gw = gW.view(o, k, k, c).permute(0, 3, 1, 2) if want_w else None
        gb = gy.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        gx = unpad(gx.view(n, c, hp, wp), pad, reflect) if want_x else None
        return gx, gw, gb, None, None, None


def fp32_conv(op, name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
              *extra) -> torch.Tensor:
    """The CPU conv paths' shared wrapper: check the padded x covers the kernel, run the autograd Function
    op(x, weight, bias, padding, *extra), which pads, in fp32 with autocast off; the output gets x's dtype
    (the autocast dtype under autocast) and layout."""
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    fmt = memory_format(x)
    if min(x.shape[2:]) + 2 * padding < weight.shape[2]:
        raise ValueError(f"{name}: input {x.shape[2]}x{x.shape[3]} (padded by {padding}) is smaller than the kernel")
    with torch.autocast(x.device.type, enabled=False):
        y = op.apply(x.float().contiguous(), weight.float(), bias, padding, *extra)
    return dense(y.to(dtype), fmt)


def shift_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0,
                 padding_mode: str = "zeros") -> torch.Tensor:
    """F.conv2d(F.pad(x, padding, padding_mode), weight, bias) (stride 1, any square kernel; "zeros" or
    "reflect") by GEMM and shift, in fp32 (see `fp32_conv` for dtypes and layouts)."""
    if weight.dim() != 4 or x.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"shift_conv2d: expected NCHW input and an (O, {x.shape[1]}, k, k) weight, "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if padding_mode not in ("zeros", "reflect") or padding_mode == "reflect" and padding >= min(x.shape[2:]):
        raise ValueError(f"shift_conv2d: padding_mode 'zeros', or 'reflect' with padding under the input's sides, "
                         f"got {padding_mode!r}, padding {padding} for {x.shape[2]}x{x.shape[3]}")
    # any backward takes the padded x saved by the forward
    keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return fp32_conv(_ShiftConv, "shift_conv2d", x, weight, bias, padding, padding_mode == "reflect", keep)


class FastConv2d(nn.Conv2d):
    """An nn.Conv2d computed by `_fast`; exports and torch.compile record the plain convolution (inductor
    compiles that well; the fast paths' many small ops compile slowly and failed to lower with dynamic
    shapes)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, reflect_pad: int = 0) -> "FastConv2d":
        """A module sharing `conv`'s Parameters; with reflect_pad, also computing a ReflectionPad2d(reflect_pad)
        before the (unpadded) conv."""
        padding, mode = (reflect_pad, "reflect") if reflect_pad else (conv.padding, "zeros")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, padding=padding, bias=conv.bias is not None,
                  padding_mode=mode, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def _conv_forward(self, x, weight, bias):
        if exporting() or torch.compiler.is_compiling():
            return super()._conv_forward(x, weight, bias)
        return self._fast(x, weight, bias)

    def _fast(self, x, weight, bias):
        raise NotImplementedError


class ShiftConv2d(FastConv2d):
    """nn.Conv2d (stride 1, zero or reflect padding, few output channels) computed by `shift_conv2d`."""

    def _fast(self, x, weight, bias):
        return shift_conv2d(x, weight, bias, self.padding[0], self.padding_mode)


def plain_stride1_conv(m: nn.Module) -> bool:
    """A plain nn.Conv2d with a square kernel, stride 1, no dilation or groups, equal zero padding."""
    return (type(m) is nn.Conv2d and m.kernel_size[0] == m.kernel_size[1] and m.stride == (1, 1)
            and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
            and m.padding[0] == m.padding[1])


def shift_applicable(m: nn.Module) -> bool:
    """A conv that `shift_conv2d` computes faster than oneDNN here: stride 1, kernel >= 3, <= MAX_OUT outputs."""
    return plain_stride1_conv(m) and m.kernel_size[0] >= 3 and m.out_channels <= MAX_OUT
