"""Reflect-padded convolution without the padded copy: conv2d(F.pad(x, p, "reflect"), w, b, stride).

Forward: an implicit-GEMM Triton kernel. Rows of the GEMM are output pixels (n, oh, ow), columns output
channels, and the reduction runs over kernel taps (kh, kw) and input-channel blocks; the reflection is
index math on the input row/column of each tap (-i before the start, 2(H-1) - i past the end).
The weight is read from a (KH, KW, IC, OC)-contiguous copy so that its tiles are vector loads, and
input tiles are laid out for coalesced reads in both layouts (`benchmarks/kernels.py --compile-only`
reports the loads, registers and shared memory of every variant, without a GPU).
Operands stay in their dtype (fp16/bf16/fp32), products accumulate in fp32; fp32 inputs use TF32 only
where torch.backends.cudnn.allow_tf32 allows it for cuDNN. Tiles are autotuned per shape on the GPU.
Backward: torch ops, not Triton: aten.convolution_backward on the padded input (materialised only
there), then reflection_pad2d_backward folds the border gradients back into the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.kernels.runtime import HAS_TRITON, INTERPRET, dense, exporting, memory_format, next_pow2, use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

# (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps); one small config when interpreting on CPU
GPU_TILES = [(128, 128, 32, 3, 8), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
             (128, 64, 64, 3, 8), (64, 64, 64, 3, 4), (128, 32, 32, 4, 4), (128, 16, 32, 4, 4), (64, 16, 64, 4, 4),
             (128, 64, 16, 4, 4), (128, 16, 16, 4, 4)]  # BLOCK_K 16: few input channels (the RGB first conv)
INTERPRET_TILES = [(64, 32, 32, 1, 4)]


def plain_reflect_pad_conv2d(x, weight, bias=None, padding=1, stride=1):
    """F.pad(reflect) + F.conv2d: what the unfused modules compute, and what exports record."""
    return F.conv2d(F.pad(x, (padding,) * 4, mode="reflect"), weight, bias, stride)


if HAS_TRITON:
    def _prune(configs, named_args, **kwargs):
        """Drop tiles wider than the output channels or deeper than the input channels (RGB in or out)."""
        oc, ic = max(16, next_pow2(named_args["OC"])), max(16, next_pow2(named_args["IC"]))
        fit = [c for c in configs if c.kwargs["BLOCK_N"] <= oc and c.kwargs["BLOCK_K"] <= ic]
        return fit or configs[-1:]

    @triton.jit
    def _reflect(i, size):
        i = tl.where(i < 0, -i, i)
        return tl.where(i >= size, 2 * (size - 1) - i, i)

    @triton.autotune(
        configs=[triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_stages=s, num_warps=w)
                 for m, n, k, s, w in (INTERPRET_TILES if INTERPRET else GPU_TILES)],
        key=["M", "OC", "IC", "H", "W", "KH", "KW", "STRIDE", "PAD"],
        prune_configs_by={"early_config_prune": _prune})
    @triton.jit
    def _reflect_conv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, OC, IC, H, W, OH, OW,
                             sxN, sxC, sxH, sxW, swO, swI, swH, swW, syN, syC, syH, syW,
                             PAD: tl.constexpr, STRIDE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                             HAS_BIAS: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid = tl.program_id(0)
        num_n = tl.cdiv(OC, BLOCK_N)
        m = (pid // num_n) * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels; consecutive pids share them
        oc = (pid % num_n) * BLOCK_N + tl.arange(0, BLOCK_N)
        ow = m % OW
        oh = (m // OW) % OH
        n = (m // (OW * OH)).to(tl.int64)
        m_ok = m < M
        oc_ok = oc < OC
        k = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for tap in range(KH * KW):
            kh = tap // KW
            kw = tap % KW
            ih = _reflect(oh * STRIDE - PAD + kh, H)
            iw = _reflect(ow * STRIDE - PAD + kw, W)
            a_row = n * sxN + ih * sxH + iw * sxW
            for ic0 in range(0, IC, BLOCK_K):
                ic = ic0 + k
                # A is loaded as [BLOCK_K, BLOCK_M]: with nothing known about the (reflected) pixel offsets,
                # Triton spreads a warp's threads over the last axis, consecutive pixels, which are
                # consecutive addresses in NCHW; in channels_last sxC == 1 makes it vectorise along ic.
                a = tl.load(x_ptr + a_row[None, :] + ic[:, None] * sxC, mask=m_ok[None, :] & (ic[:, None] < IC),
                            other=0.0)
                b = tl.load(w_ptr + oc[None, :] * swO + ic[:, None] * swI + kh * swH + kw * swW,
                            mask=(ic[:, None] < IC) & oc_ok[None, :], other=0.0)
                if DOT_FP32:  # the interpreter's dot mishandles bf16 operands
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(tl.trans(a), b, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + oc, mask=oc_ok, other=0.0).to(tl.float32)[None, :]
        y_row = n * syN + oh * syH + ow * syW
        tl.store(y_ptr + y_row[:, None] + oc[None, :] * syC, acc, mask=m_ok[:, None] & oc_ok[None, :])


def _out_shape(x, weight, padding, stride):
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    return n, oc, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1


def _forward_triton(x, weight, bias, padding, stride, fmt):
    n, ic, h, w = x.shape
    oc, _, kh, kw = weight.shape
    y = torch.empty(_out_shape(x, weight, padding, stride), device=x.device, dtype=x.dtype, memory_format=fmt)
    oh, ow = y.shape[2:]
    m = n * oh * ow
    fp32 = x.dtype == torch.float32
    precision = "tf32" if not fp32 or (not INTERPRET and torch.backends.cudnn.allow_tf32) else "ieee"

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(oc, meta["BLOCK_N"]),)

    # the weight as a (KH, KW, IC, OC)-contiguous copy (one small copy per call): swO == 1, so each tile's
    # output channels are one vector load instead of a gather at a stride of IC*KH*KW
    w_gemm = weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)
    _reflect_conv_kernel[grid](x, w_gemm, bias.contiguous() if bias is not None else weight, y, m, oc, ic, h, w, oh, ow,
                               *x.stride(), *w_gemm.stride(), *y.stride(), PAD=padding, STRIDE=stride, KH=kh, KW=kw,
                               HAS_BIAS=bias is not None, DOT_FP32=INTERPRET and x.dtype == torch.bfloat16,
                               PRECISION=precision)
    return y


# --- torch.library registration --------------------------------------------------------------------------
@torch.library.custom_op("gantk::reflect_pad_conv2d", mutates_args=())
def _reflect_pad_conv2d_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                           stride: int) -> torch.Tensor:
    fmt = memory_format(x)
    if use_triton(x):
        return _forward_triton(dense(x, fmt), weight, bias, padding, stride, fmt)
    return dense(plain_reflect_pad_conv2d(x, weight, bias, padding, stride), fmt)


@_reflect_pad_conv2d_op.register_fake
def _(x, weight, bias, padding, stride):
    return torch.empty(_out_shape(x, weight, padding, stride), dtype=x.dtype, device=x.device,
                       memory_format=memory_format(x))


def _setup_context(ctx, inputs, output):
    x, weight, bias, padding, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding, ctx.stride, ctx.has_bias = padding, stride, bias is not None


def _backward(ctx, dy):
    """Torch ops: the conv's backward on the padded input, then reflect padding's adjoint."""
    x, weight = ctx.saved_tensors
    p, need = ctx.padding, ctx.needs_input_grad
    xp = F.pad(x, (p,) * 4, mode="reflect")
    dxp, dw, db = torch.ops.aten.convolution_backward(
        dy, xp, weight, [weight.shape[0]] if ctx.has_bias else None, [ctx.stride] * 2, [0, 0], [1, 1], False,
        [0, 0], 1, [need[0], need[1], ctx.has_bias and need[2]])
    dx = torch.ops.aten.reflection_pad2d_backward(dxp, x, [p] * 4) if need[0] else None
    return dx, dw, db, None, None


_reflect_pad_conv2d_op.register_autograd(_backward, setup_context=_setup_context)


# --- public function -----------------------------------------------------------------------------------
def _check(x, weight, bias, padding, stride):
    if x.dim() != 4 or weight.dim() != 4 or not x.is_floating_point():
        raise GantkError(f"reflect_pad_conv2d: expected floating-point NCHW input and OIHW weight, got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[1]:
        raise GantkError(f"reflect_pad_conv2d: weight expects {weight.shape[1]} input channels, input has {x.shape[1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise GantkError(f"reflect_pad_conv2d: bias of shape {tuple(bias.shape)} for {weight.shape[0]} output channels")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise GantkError(f"reflect_pad_conv2d: input {x.dtype} and weight/bias {weight.dtype} must share a dtype")
    if stride < 1 or not 0 <= padding < min(x.shape[2:]):
        raise GantkError(f"reflect_pad_conv2d: reflect padding {padding} needs an input larger than it "
                         f"(got {x.shape[2]}x{x.shape[3]}) and stride >= 1 (got {stride})")
    if x.shape[2] + 2 * padding < weight.shape[2] or x.shape[3] + 2 * padding < weight.shape[3]:
        raise GantkError(f"reflect_pad_conv2d: {weight.shape[2]}x{weight.shape[3]} kernel larger than the padded "
                         f"input {x.shape[2] + 2 * padding}x{x.shape[3] + 2 * padding}")


def reflect_pad_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       padding: int = 1, stride: int = 1) -> torch.Tensor:
    """conv2d(reflect_pad(x, padding), weight, bias, stride) for NCHW (or channels_last) x, OIHW weight.
    Under autocast, inputs are cast to the autocast dtype as F.conv2d's are."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    _check(x, weight, bias, padding, stride)
    if exporting():
        return plain_reflect_pad_conv2d(x, weight, bias, padding, stride)
    return _reflect_pad_conv2d_op(x, weight, bias, int(padding), int(stride))
