"""Fused InstanceNorm: out = act(IN(x) * weight + bias) + residual, forward and backward.

Each (n, c) row holds H*W values at a fixed stride (NCHW: 1, channels_last: C); a program handles a
block of channels of one image over a chunk of its row, in tiles of [BLOCK_C, BLOCK_HW] that are
contiguous along H*W (NCHW) or along C (channels_last). Statistics are fp32 whatever the input dtype.
- A row that fits one tile is normalised in one pass: read once, written once.
- Longer rows are split into chunks (more chunks when N*C alone would leave SMs idle, as at batch 1):
  one kernel writes each chunk's (mean, M2) from Welford-style tile merges, the second merges a row's
  chunks with Chan's formula and normalises its own chunk.
The backward has the same two shapes, with sums of dz and dz*xhat in place of (mean, M2).
Without Triton (CPU), fp32 NCHW tensors go to the C kernels of `native` (norm.c), others to torch ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.kernels import native
from gantk.kernels.native import ACTIVATIONS
from gantk.kernels.runtime import HAS_TRITON, cuda_programs, dense, exporting, memory_format, next_pow2, use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

TILE = 4096  # elements per tile (fp32 registers of one program)
MAX_CHANNEL_BLOCK = 32  # channels per channels_last tile


# --- torch ops (CPU path, and what exports record) ---------------------------------------------------
def activate(z: torch.Tensor, activation: str, negative_slope: float) -> torch.Tensor:
    if activation == "relu":
        return F.relu(z)
    if activation == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    if activation == "tanh":
        return torch.tanh(z)
    return z


def activation_grad(z: torch.Tensor, activation: str, negative_slope: float) -> torch.Tensor:
    """d activate(z) / dz."""
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "leaky_relu":
        return torch.where(z > 0, 1.0, negative_slope).to(z.dtype)
    if activation == "tanh":
        return 1 - torch.tanh(z) ** 2
    return torch.ones_like(z)


def plain_instance_norm_act(x, weight=None, bias=None, eps=1e-5, activation="relu", negative_slope=0.2, residual=None):
    """The unfused modules' ops (F.instance_norm, the activation, the add): what exports record."""
    y = activate(F.instance_norm(x, weight=weight, bias=bias, eps=eps), activation, negative_slope)
    return y if residual is None else residual + y


def _forward_torch(x, weight, bias, eps, activation, slope, residual):
    """(out, mean, rstd) with fp32 statistics, by torch ops."""
    var, mean = torch.var_mean(x.float(), (2, 3), unbiased=False)
    rstd = torch.rsqrt(var + eps)
    z = (x.float() - mean[:, :, None, None]) * rstd[:, :, None, None]
    if weight is not None:
        z = z * weight.float()[:, None, None]
    if bias is not None:
        z = z + bias.float()[:, None, None]
    y = activate(z, activation, slope)
    y = (y if residual is None else y + residual.float()).to(_out_dtype(x, residual))
    return y, mean, rstd


# --- Triton kernels ------------------------------------------------------------------------------------
if HAS_TRITON:
    @triton.jit
    def _tile(n, c, hw0, end, C, sN, sC, sHW, BLOCK_HW: tl.constexpr):
        """Offsets and mask of the [BLOCK_C, BLOCK_HW] tile of image n, channels c, positions hw0.. < end."""
        hw = hw0 + tl.arange(0, BLOCK_HW)
        offs = n.to(tl.int64) * sN + c[:, None] * sC + hw[None, :] * sHW
        return offs, (c[:, None] < C) & (hw[None, :] < end)

    @triton.jit
    def _act(z, ACT: tl.constexpr, slope):
        if ACT == 1:
            z = tl.maximum(z, 0.0)
        elif ACT == 2:
            z = tl.where(z > 0, z, z * slope)
        elif ACT == 3:
            z = 2.0 * tl.sigmoid(2.0 * z) - 1.0
        return z

    @triton.jit
    def _act_grad(z, ACT: tl.constexpr, slope):
        """d act(z) / dz."""
        if ACT == 1:
            g = tl.where(z > 0, 1.0, 0.0)
        elif ACT == 2:
            g = tl.where(z > 0, 1.0, slope)
        elif ACT == 3:
            t = 2.0 * tl.sigmoid(2.0 * z) - 1.0
            g = 1.0 - t * t
        else:
            g = tl.full(z.shape, 1.0, tl.float32)
        return g

    @triton.jit
    def _affine(w_ptr, b_ptr, c, C, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
        w = tl.full(c.shape, 1.0, tl.float32)
        b = tl.full(c.shape, 0.0, tl.float32)
        if HAS_W:
            w = tl.load(w_ptr + c, mask=c < C, other=1.0).to(tl.float32)
        if HAS_B:
            b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        return w, b

    @triton.jit
    def _chunk_counts(HW, CHUNK, S, S_BLOCK: tl.constexpr):
        s = tl.arange(0, S_BLOCK)
        return tl.minimum(tl.maximum(HW - s * CHUNK, 0), CHUNK).to(tl.float32), s < S

    @triton.jit
    def _in_stats_kernel(x_ptr, pmean_ptr, pm2_ptr, C, HW, CHUNK, S, sN, sC, sHW,
                         BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """(mean, M2) of every row over chunk s, merged tile by tile (Chan et al.)."""
        n, s = tl.program_id(0), tl.program_id(2)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        start = s * CHUNK
        end = tl.minimum(start + CHUNK, HW)
        mean = tl.zeros([BLOCK_C], tl.float32)
        m2 = tl.zeros([BLOCK_C], tl.float32)
        cnt = 0.0
        for hw0 in range(start, end, BLOCK_HW):
            offs, mask = _tile(n, c, hw0, end, C, sN, sC, sHW, BLOCK_HW)
            v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            nt = tl.minimum(end - hw0, BLOCK_HW).to(tl.float32)
            tmean = tl.sum(v, axis=1) / nt
            d = tl.where(mask, v - tmean[:, None], 0.0)
            delta = tmean - mean
            tot = cnt + nt
            mean += delta * (nt / tot)
            m2 += tl.sum(d * d, axis=1) + delta * delta * (cnt * nt / tot)
            cnt = tot
        idx = (n * C + c) * S + s
        tl.store(pmean_ptr + idx, mean, mask=c < C)
        tl.store(pm2_ptr + idx, m2, mask=c < C)

    @triton.jit
    def _in_fwd_kernel(x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, mean_ptr, rstd_ptr, pmean_ptr, pm2_ptr,
                       C, HW, CHUNK, S, sN, sC, sHW, eps, slope,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
                       ONE_PASS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, S_BLOCK: tl.constexpr):
        """Normalise chunk s of every row (ONE_PASS: the whole row is this program's single tile)."""
        n, s = tl.program_id(0), tl.program_id(2)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        if ONE_PASS:
            offs, mask = _tile(n, c, 0, HW, C, sN, sC, sHW, BLOCK_HW)
            v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.sum(v, axis=1) / HW
            d = tl.where(mask, v - mean[:, None], 0.0)
            var = tl.sum(d * d, axis=1) / HW
        else:
            cnt, s_ok = _chunk_counts(HW, CHUNK, S, S_BLOCK)
            pidx = (n * C + c)[:, None] * S + tl.arange(0, S_BLOCK)[None, :]
            pmask = (c[:, None] < C) & s_ok[None, :]
            pmean = tl.load(pmean_ptr + pidx, mask=pmask, other=0.0)
            pm2 = tl.load(pm2_ptr + pidx, mask=pmask, other=0.0)
            mean = tl.sum(pmean * cnt[None, :], axis=1) / HW
            dm = pmean - mean[:, None]
            var = tl.sum(pm2 + dm * dm * cnt[None, :], axis=1) / HW
        rstd = 1.0 / tl.sqrt(var + eps)
        if s == 0:
            tl.store(mean_ptr + n * C + c, mean, mask=c < C)
            tl.store(rstd_ptr + n * C + c, rstd, mask=c < C)
        w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B)
        scale = rstd * w
        shift = b - mean * scale
        start = s * CHUNK
        end = tl.minimum(start + CHUNK, HW)
        for hw0 in range(start, end, BLOCK_HW):
            if not ONE_PASS:
                offs, mask = _tile(n, c, hw0, end, C, sN, sC, sHW, BLOCK_HW)
                v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            out = _act(v * scale[:, None] + shift[:, None], ACT, slope)
            if HAS_RES:
                out += tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_ptr + offs, out, mask=mask)

    @triton.jit
    def _dz_xhat(x_ptr, dy_ptr, offs, mask, mean, rstd, w, b, ACT: tl.constexpr, slope):
        """xhat and dL/dz (z = xhat * w + b, before the activation) of one tile, zero outside the mask."""
        xhat = (tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ACT != 0:
            dy *= _act_grad(xhat * w[:, None] + b[:, None], ACT, slope)
        return tl.where(mask, xhat, 0.0), tl.where(mask, dy, 0.0)

    @triton.jit
    def _in_bwd_sums_kernel(x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, psdz_ptr, psdzx_ptr,
                            C, HW, CHUNK, S, sN, sC, sHW, slope,
                            HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
        """Sums of dz and dz * xhat of every row over chunk s."""
        n, s = tl.program_id(0), tl.program_id(2)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
        rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
        w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B)
        start = s * CHUNK
        end = tl.minimum(start + CHUNK, HW)
        sdz = tl.zeros([BLOCK_C], tl.float32)
        sdzx = tl.zeros([BLOCK_C], tl.float32)
        for hw0 in range(start, end, BLOCK_HW):
            offs, mask = _tile(n, c, hw0, end, C, sN, sC, sHW, BLOCK_HW)
            xhat, dz = _dz_xhat(x_ptr, dy_ptr, offs, mask, mean, rstd, w, b, ACT, slope)
            sdz += tl.sum(dz, axis=1)
            sdzx += tl.sum(dz * xhat, axis=1)
        idx = (n * C + c) * S + s
        tl.store(psdz_ptr + idx, sdz, mask=c < C)
        tl.store(psdzx_ptr + idx, sdzx, mask=c < C)

    @triton.jit
    def _in_bwd_kernel(x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, psdz_ptr, psdzx_ptr, dx_ptr, sdz_ptr, sdzx_ptr,
                       C, HW, CHUNK, S, sN, sC, sHW, slope,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
                       ONE_PASS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, S_BLOCK: tl.constexpr):
        """dx = rstd * w * (dz - mean(dz) - xhat * mean(dz * xhat)) over chunk s; row sums for dw, db."""
        n, s = tl.program_id(0), tl.program_id(2)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
        rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
        w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B)
        if ONE_PASS:
            offs, mask = _tile(n, c, 0, HW, C, sN, sC, sHW, BLOCK_HW)
            xhat, dz = _dz_xhat(x_ptr, dy_ptr, offs, mask, mean, rstd, w, b, ACT, slope)
            sdz = tl.sum(dz, axis=1)
            sdzx = tl.sum(dz * xhat, axis=1)
        else:
            pidx = (n * C + c)[:, None] * S + tl.arange(0, S_BLOCK)[None, :]
            pmask = (c[:, None] < C) & (tl.arange(0, S_BLOCK)[None, :] < S)
            sdz = tl.sum(tl.load(psdz_ptr + pidx, mask=pmask, other=0.0), axis=1)
            sdzx = tl.sum(tl.load(psdzx_ptr + pidx, mask=pmask, other=0.0), axis=1)
        if s == 0:
            tl.store(sdz_ptr + n * C + c, sdz, mask=c < C)
            tl.store(sdzx_ptr + n * C + c, sdzx, mask=c < C)
        scale = rstd * w
        mdz = sdz / HW
        mdzx = sdzx / HW
        start = s * CHUNK
        end = tl.minimum(start + CHUNK, HW)
        for hw0 in range(start, end, BLOCK_HW):
            if not ONE_PASS:
                offs, mask = _tile(n, c, hw0, end, C, sN, sC, sHW, BLOCK_HW)
                xhat, dz = _dz_xhat(x_ptr, dy_ptr, offs, mask, mean, rstd, w, b, ACT, slope)
            dx = scale[:, None] * (dz - mdz[:, None] - xhat * mdzx[:, None])
            tl.store(dx_ptr + offs, dx, mask=mask)


# --- launchers ------------------------------------------------------------------------------------------
class Plan:
    """Tile shape, chunking and grid for a tensor of shape (N, C, H, W) in layout `fmt`."""

    def __init__(self, x: torch.Tensor, fmt: torch.memory_format, programs: int | None = None):
        n, c, h, w = x.shape
        hw = h * w
        self.C, self.HW = c, hw
        nhwc = fmt == torch.channels_last
        self.strides = (hw * c, 1, c) if nhwc else (c * hw, hw, 1)  # per image, channel, H*W position
        if nhwc:
            self.BLOCK_C = min(next_pow2(c), MAX_CHANNEL_BLOCK)
            self.BLOCK_HW = min(next_pow2(hw), TILE // self.BLOCK_C)
        else:
            self.BLOCK_HW = min(next_pow2(hw), TILE)
            self.BLOCK_C = min(next_pow2(c), max(1, TILE // self.BLOCK_HW))
        blocks = n * triton.cdiv(c, self.BLOCK_C)
        programs = programs or cuda_programs(x.device)
        want = min(triton.cdiv(programs, blocks), triton.cdiv(hw, self.BLOCK_HW))  # chunks per row
        self.CHUNK = triton.cdiv(triton.cdiv(hw, max(want, 1)), self.BLOCK_HW) * self.BLOCK_HW
        self.S = triton.cdiv(hw, self.CHUNK)
        self.S_BLOCK = next_pow2(self.S)
        self.ONE_PASS = self.S == 1 and hw <= self.BLOCK_HW
        self.grid = (n, triton.cdiv(c, self.BLOCK_C), self.S)
        self.num_warps = 8 if self.BLOCK_C * self.BLOCK_HW >= 2048 else 4

    def args(self):
        return (self.C, self.HW, self.CHUNK, self.S, *self.strides)

    def meta(self):
        return dict(BLOCK_C=self.BLOCK_C, BLOCK_HW=self.BLOCK_HW, num_warps=self.num_warps)

    def partials(self, x: torch.Tensor):
        """Two (N, C, S) fp32 buffers for per-chunk results (unused placeholders in one-pass mode)."""
        shape = (x.shape[0], self.C, self.S) if not self.ONE_PASS else (1,)
        return [torch.empty(shape, device=x.device, dtype=torch.float32) for _ in range(2)]


def _vec(t, placeholder):
    """A per-channel vector as the kernels index it (contiguous), or a placeholder pointer when absent."""
    return t.contiguous() if t is not None else placeholder


def _forward_triton(x, weight, bias, eps, activation, slope, residual, out_dtype, fmt):
    n, c = x.shape[:2]
    plan = Plan(x, fmt)
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype, memory_format=fmt)
    mean = torch.empty(n, c, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    pmean, pm2 = plan.partials(x)
    if not plan.ONE_PASS:
        _in_stats_kernel[plan.grid](x, pmean, pm2, *plan.args(), **plan.meta())
    r = dense(residual, fmt) if residual is not None else x
    _in_fwd_kernel[plan.grid](x, _vec(weight, x), _vec(bias, x), r, y, mean, rstd, pmean, pm2, *plan.args(), eps, slope,
                              HAS_W=weight is not None, HAS_B=bias is not None, HAS_RES=residual is not None,
                              ACT=ACTIVATIONS[activation], ONE_PASS=plan.ONE_PASS, S_BLOCK=plan.S_BLOCK, **plan.meta())
    return y, mean, rstd


def _backward_triton(dy, x, weight, bias, mean, rstd, activation, slope, fmt):
    plan = Plan(x, fmt)
    dy = dense(dy, fmt)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype, memory_format=fmt)
    sdz, sdzx = torch.empty_like(mean), torch.empty_like(mean)
    psdz, psdzx = plan.partials(x)
    w, b, mean, rstd = _vec(weight, x), _vec(bias, x), mean.contiguous(), rstd.contiguous()
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, ACT=ACTIVATIONS[activation])
    if not plan.ONE_PASS:
        _in_bwd_sums_kernel[plan.grid](x, dy, w, b, mean, rstd, psdz, psdzx, *plan.args(), slope, **flags,
                                       **plan.meta())
    _in_bwd_kernel[plan.grid](x, dy, w, b, mean, rstd, psdz, psdzx, dx, sdz, sdzx, *plan.args(), slope, **flags,
                              ONE_PASS=plan.ONE_PASS, S_BLOCK=plan.S_BLOCK, **plan.meta())
    return dx, sdz, sdzx


def _backward_torch(dy, x, weight, bias, mean, rstd, activation, slope):
    """(dx, sum dz, sum dz * xhat) by torch ops (fp32)."""
    xhat = (x.float() - mean[:, :, None, None]) * rstd[:, :, None, None]
    w = weight.float()[:, None, None] if weight is not None else 1.0
    dz = dy.float()
    if activation != "none":
        b = bias.float()[:, None, None] if bias is not None else 0.0
        dz = dz * activation_grad(xhat * w + b, activation, slope)
    sdz, sdzx = dz.sum((2, 3)), (dz * xhat).sum((2, 3))
    hw = x.shape[2] * x.shape[3]
    dx = rstd[:, :, None, None] * w * (dz - sdz[:, :, None, None] / hw - xhat * sdzx[:, :, None, None] / hw)
    return dx.to(x.dtype), sdz, sdzx


# --- torch.library registration --------------------------------------------------------------------------
def _out_dtype(x, residual):
    return x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)


@torch.library.custom_op("gantk::instance_norm_act", mutates_args=())
def _instance_norm_act_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                          activation: str, negative_slope: float, residual: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fmt = memory_format(x)
    if use_triton(x):
        return _forward_triton(dense(x, fmt), weight, bias, eps, activation, negative_slope, residual,
                               _out_dtype(x, residual), fmt)
    if native.usable(x, weight, bias, residual):
        return native.instance_norm_act(x, weight, bias, eps, activation, negative_slope, residual)
    y, mean, rstd = _forward_torch(x, weight, bias, eps, activation, negative_slope, residual)
    return dense(y, fmt), mean, rstd


@_instance_norm_act_op.register_fake
def _(x, weight, bias, eps, activation, negative_slope, residual):
    stats = x.new_empty(x.shape[:2], dtype=torch.float32)
    y = torch.empty(x.shape, dtype=_out_dtype(x, residual), device=x.device, memory_format=memory_format(x))
    return y, stats, torch.empty_like(stats)


@torch.library.custom_op("gantk::instance_norm_act_backward", mutates_args=())
def _instance_norm_act_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                                   bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor,
                                   activation: str, negative_slope: float
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, per-row sum of dz, per-row sum of dz * xhat); dw and db are the latter two summed over N."""
    fmt = memory_format(x)
    if use_triton(x):
        return _backward_triton(dy, dense(x, fmt), weight, bias, mean, rstd, activation, negative_slope, fmt)
    if native.usable(dy, x, weight, bias, mean, rstd):
        return native.instance_norm_act_backward(dy, x, weight, bias, mean, rstd, activation, negative_slope)
    dx, sdz, sdzx = _backward_torch(dy, x, weight, bias, mean, rstd, activation, negative_slope)
    return dense(dx, fmt), sdz, sdzx


@_instance_norm_act_backward_op.register_fake
def _(dy, x, weight, bias, mean, rstd, activation, negative_slope):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    return dx, torch.empty_like(mean), torch.empty_like(mean)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, activation, slope, residual = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.activation, ctx.slope = activation, slope
    ctx.residual_dtype = residual.dtype if residual is not None else None


def _grads(ctx, dy, backward):
    """The gradients of (x, weight, bias, eps, activation, slope, residual), from `backward`'s
    (dx, sum dz, sum dz * xhat)."""
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, sdz, sdzx = backward(dy, x, weight, bias, mean, rstd, ctx.activation, ctx.slope)
    dw = sdzx.sum(0).to(weight.dtype) if weight is not None else None
    db = sdz.sum(0).to(bias.dtype) if bias is not None else None
    dr = dy.to(ctx.residual_dtype) if ctx.residual_dtype is not None else None
    return dx, dw, db, None, None, None, dr


def _backward(ctx, dy, _dmean, _drstd):
    return _grads(ctx, dy, _instance_norm_act_backward_op)


_instance_norm_act_op.register_autograd(_backward, setup_context=_setup_context)


class _InstanceNormActC(torch.autograd.Function):
    """The C kernels as a plain autograd.Function: eager CPU calls skip the custom op's dispatch, which
    costs more than the kernels themselves at the generators' sizes (same outputs and saved tensors)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, activation, slope, residual):
        out = native.instance_norm_act(x, weight, bias, eps, activation, slope, residual)
        _setup_context(ctx, (x, weight, bias, eps, activation, slope, residual), out)
        return out[0]

    @staticmethod
    def backward(ctx, dy):
        return _grads(ctx, dy.contiguous(), native.instance_norm_act_backward)


# --- public function -----------------------------------------------------------------------------------
def _check(x, weight, bias, activation, residual):
    if x.dim() != 4 or not x.is_floating_point():
        raise GantkError(f"instance_norm_act: expected a floating-point NCHW tensor, got {tuple(x.shape)} {x.dtype}")
    if activation not in ACTIVATIONS:
        raise GantkError(f"instance_norm_act: activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (x.shape[1],):
            raise GantkError(f"instance_norm_act: {name} of shape {tuple(p.shape)} for {x.shape[1]} channels")
    if residual is not None and residual.shape != x.shape:
        raise GantkError(f"instance_norm_act: residual of shape {tuple(residual.shape)} for input {tuple(x.shape)}")
    if x.shape[2] * x.shape[3] < 2:
        raise GantkError(f"instance_norm_act: needs more than one value per channel, got {x.shape[2]}x{x.shape[3]}")


def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      eps: float = 1e-5, activation: str = "relu", negative_slope: float = 0.2,
                      residual: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
    """act(InstanceNorm(x) * weight + bias) + residual for NCHW (or channels_last) x; activation is
    none | relu | leaky_relu (negative_slope) | tanh. Differentiable in x, weight, bias and residual.
    `inplace`: without autograd, the C kernels write the result over x and return it (a large map's output
    then takes no new memory); elsewhere it is ignored."""
    _check(x, weight, bias, activation, residual)
    if exporting():
        return plain_instance_norm_act(x, weight, bias, eps, activation, negative_slope, residual)
    if not torch.compiler.is_compiling() and not use_triton(x) and native.usable(x, weight, bias, residual):
        if inplace and not torch.is_grad_enabled():
            return native.instance_norm_act(x, weight, bias, float(eps), activation, float(negative_slope), residual,
                                            inplace=True)[0]
        return _InstanceNormActC.apply(x, weight, bias, float(eps), activation, float(negative_slope), residual)
    return _instance_norm_act_op(x, weight, bias, float(eps), activation, float(negative_slope), residual)[0]
