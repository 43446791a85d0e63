"""Convolution and transposed convolution in bands of output rows, without gradients: the CPU memory and
speed path for the generators' up- and downsampling and their first 7x7 (`--kernels winograd`).

oneDNN computes a ConvTranspose2d through temporaries the size of the whole output: at 1024 px the ResNet
generators' last one (128 -> 64 channels, 512^2 -> 1024^2, a 256 MB output) took 640 MB more while it ran,
the process's peak, above eager's whole Winograd-free run. Cut into bands of output rows, each computed from
only the input rows that reach it (an output row oh takes input rows ih with oh = s*ih - p + kh, kh < k), the
temporaries stay the size of a band and in cache: measured 12-21% faster on the 512 and 1024 px layers here
(paired runs), and no slower where the output is small enough to stay one call (BAND_BYTES: two bands of the
16 MB layer at 256 px were slower). The same oneDNN kernels compute every band, so results differ from one
call by rounding at most. With gradients, while exporting or compiling, the plain call runs (the backward of
many sliced calls would allocate the input's size per band).

A Conv2d's oneDNN call likewise holds a whole-size temporary beside its output (the first 7x7 computes into
a blocked copy, the strided 3x3 reorders its whole input): at 1024 px the first two layers held 640 MB at
once, and that span stayed in the heap that `keep_freed_memory` keeps, so the Winograd generator peaked at
1.4-1.8 GB in a fresh process against eager's 1.3. In bands (`banded_conv2d`) they hold the outputs and a
band: 1454 MB at 1024 px and 1181 MB at 512 px batch 4 against eager's 1337 (`gantk bench --isolate`,
benchmarks/results). The bands cost 10-20% on those layers (one copy of each band into the output), about 1%
of the forward, within this host's noise in paired whole-model runs.

Where the C kernels are built and the kernel is square, each band is instead one GEMM and a col2im
(`gemm_conv_transpose2d`): oneDNN's transposed convs ran at 40-80 GFLOP/s on these large layers, the GEMM
(k*k*O x C by C x a few input rows) at 110-160; both upsampling layers of resnet_9blocks at 1024 px took
747 ms instead of 1254 (in-model, per forward). Small outputs stay one oneDNN call (it was as fast there).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.kernels import native
from gantk.kernels.runtime import exporting

BAND_BYTES = 8 << 20  # output bytes per band; outputs up to twice this stay one call
Z_BYTES = 2 << 20  # bytes of tap contributions per GEMM (measured: 2 MB ran the GEMMs 10-30% faster than 8-32)


def gemm_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                          padding: int, output_padding: int) -> torch.Tensor:
    """F.conv_transpose2d of contiguous fp32 NCHW x by a square (C, O, k, k) weight, k >= stride, as GEMMs and
    the C col2im (`native.col2im`): for each band of input rows, Z = every tap's W^T x (k*k*O rows) by one
    torch.mm, then each output pixel sums the taps that reach it."""
    n, c, h, w = x.shape
    k, o = weight.shape[2], weight.shape[1]
    ho, wo = ((size - 1) * stride - 2 * padding + k + output_padding for size in (h, w))
    taps = weight.detach().float().permute(2, 3, 1, 0).reshape(k * k * o, c).contiguous()
    rows = max(1, min(h, Z_BYTES // (x.element_size() * k * k * o * w)))
    Z = x.new_empty(k * k * o * rows * w)
    y = x.new_empty(n, o, ho, wo)
    b = None if bias is None else bias.detach().float().contiguous()
    for i in range(n):
        for r0 in range(0, h, rows):
            r = min(rows, h - r0)
            z = torch.mm(taps, x[i, :, r0:r0 + r].reshape(c, r * w), out=Z[:k * k * o * r * w].view(k * k * o, r * w))
            native.col2im(z, k, stride, padding, r0, h, w, b, y[i])
    return y


def banded_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple,
                            padding: tuple, output_padding: tuple) -> torch.Tensor:
    """F.conv_transpose2d(x, weight, bias, stride, padding, output_padding) of NCHW x, computed in bands of
    at most BAND_BYTES of output rows when the output is larger than twice that (kernel height >= stride)."""
    (s, sw), (p, pw), (op, opw) = stride, padding, output_padding
    n, _, h, w = x.shape
    k, o = weight.shape[2], weight.shape[1]
    ho, wo = (h - 1) * s - 2 * p + k + op, (w - 1) * sw - 2 * pw + weight.shape[3] + opw
    row = x.element_size() * n * o * wo
    if ho * row <= 2 * BAND_BYTES or k < s:
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)
    if (k == weight.shape[3] and s == sw and p == pw and op == opw and native.usable(x)
            and weight.dtype == torch.float32):
        return gemm_conv_transpose2d(x, weight, bias, s, p, op)
    rows = max(s, BAND_BYTES // row // s * s)
    y = x.new_empty(n, o, ho, wo)
    for o0 in range(0, ho, rows):
        o1 = min(ho, o0 + rows)
        i0, i1 = max(0, -(-(o0 + p - k + 1) // s)), min(h, (o1 - 1 + p) // s + 1)  # the input rows that reach them
        z = F.conv_transpose2d(x[:, :, i0:i1], weight, bias, stride, (0, pw), (0, opw))
        top = s * i0 - p  # the output row of z's first row
        end = min(o1, top + z.shape[2])
        y[:, :, o0:end] = z[:, :, o0 - top:end - top]
        if end < o1:  # output-padding rows that no input reaches
            y[:, :, end:o1] = 0 if bias is None else bias.view(1, o, 1, 1)
    return y


def banded_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple,
                  padding: tuple) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride, padding) of NCHW x (zero padding), computed in bands of at most
    BAND_BYTES of output rows when the output is larger than twice that: each band from the input rows it
    reads (output row oh reads input rows s*oh - p + kh, kh < k), rows outside the input given as zeros."""
    (s, sw), (p, pw) = stride, padding
    n, _, h, w = x.shape
    o, k = weight.shape[0], weight.shape[2]
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * pw - weight.shape[3]) // sw + 1
    row = x.element_size() * n * o * wo
    if ho * row <= 2 * BAND_BYTES:
        return F.conv2d(x, weight, bias, stride, padding)
    rows = max(1, BAND_BYTES // row)
    y = x.new_empty(n, o, ho, wo)
    for o0 in range(0, ho, rows):
        o1 = min(ho, o0 + rows)
        i0, i1 = o0 * s - p, (o1 - 1) * s - p + k  # the rows it reads, in unpadded coordinates
        band = x[:, :, max(i0, 0):min(i1, h)]
        if i0 < 0 or i1 > h:
            band = F.pad(band, (0, 0, max(0, -i0), max(0, i1 - h)))
        y[:, :, o0:o1] = F.conv2d(band, weight, bias, stride, (0, pw))
    return y


def in_bands(x: torch.Tensor) -> bool:
    """Whether a banded module computes `x` in bands: a 4-D input, no gradient, not exporting or compiling
    (there the plain call runs)."""
    return x.dim() == 4 and not (torch.is_grad_enabled() or exporting() or torch.compiler.is_compiling())


class BandedConv2d(nn.Conv2d):
    """nn.Conv2d computed by `banded_conv2d` when no gradient is wanted."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "BandedConv2d":
        """A module sharing `conv`'s Parameters."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  bias=conv.bias is not None, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not in_bands(x):
            return super().forward(x)
        return banded_conv2d(x, self.weight, self.bias, self.stride, self.padding)


class BandedConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d computed by `banded_conv_transpose2d` when no gradient is wanted."""

    @classmethod
    def from_conv(cls, conv: nn.ConvTranspose2d) -> "BandedConvTranspose2d":
        """A module sharing `conv`'s Parameters."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.output_padding, bias=conv.bias is not None, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or not in_bands(x):
            return super().forward(x, output_size)
        return banded_conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)


def bands_applicable(m: nn.Module) -> bool:
    """A plain 2-D conv or transposed conv: ungrouped, undilated, zero padding given in pixels."""
    return (type(m) in (nn.Conv2d, nn.ConvTranspose2d) and m.groups == 1 and m.dilation == (1, 1)
            and m.padding_mode == "zeros" and not isinstance(m.padding, str))
