"""Speed options and module swaps: the one vocabulary of `--kernels` and of `gantk bench`'s PyTorch options,
when each can run, and every in-place swap of a network's modules for gantk.kernels' ops.

Swaps keep state-dict keys and Parameter objects (checkpoints load, optimizers keep working); index-keeping
nn.Identity modules take the places of folded layers. What `patch` (the Triton path) swaps:
- in any nn.Sequential: ReflectionPad2d(p) + Conv2d(padding 0)   -> Identity + ReflectPadConv2d;
  InstanceNorm2d + ReLU | LeakyReLU | Tanh                       -> InstanceNormAct(act) + Identity;
- any other InstanceNorm2d (no running statistics)               -> InstanceNormAct("none");
- ResnetBlock (x + conv_block(x))                                -> the residual add moves into its last norm;
- TransformerNet: ConvLayer's pad + conv, ResidualBlock (IN + ReLU, IN + residual). Its top-level
  ReLUs are calls in TransformerNet.forward, not modules, so they stay separate ops.
BatchNorm nets (the U-Net of pix2pix, BicycleGAN with batch norm) have no matching chain and are left
as they are; zero-padded (strided) convs and transposed convs stay cuDNN's, their norm + ReLU is fused.
On CPU the fused norms run C kernels (torch ops without a compiler or for other dtypes and layouts), the
fused convs torch ops (Triton only under TRITON_INTERPRET=1); while exporting they record exactly the
unpatched modules' ops. `patch_norms` does the norm part alone; `patch_winograd` is the CPU path.
"""
from __future__ import annotations

import contextlib
import copy
import logging

import torch
import torch.nn as nn

from gantk.errors import GantkError
from gantk.kernels.bands import BandedConv2d, BandedConvTranspose2d, bands_applicable
from gantk.kernels.modules import InstanceNormAct, ReflectPadConv2d
from gantk.kernels.runtime import HAS_TRITON, keep_freed_memory
from gantk.kernels.shift_conv import ShiftConv2d, shift_applicable
from gantk.kernels.winograd import WinogradConv2d, winograd_applicable
from gantk.nn.generators import ResnetBlock
from gantk.nn.transformer import ConvLayer, ResidualBlock
from gantk.runtime import cpu_has_bf16

log = logging.getLogger("gantk.acceleration")

# --- the vocabulary -------------------------------------------------------------------------------------
KERNELS = ("none", "triton", "winograd")
KERNELS_HELP = ("triton: fused gantk.kernels ops for reflect-pad conv and InstanceNorm+activation chains (Triton on "
                "CUDA; on CPU C kernels for the norms, torch ops for the convs); winograd: the CPU speed path, "
                "Winograd F(4x4,3x3)/F(3x3,4x4) for the stride-1 3x3/4x4 convolutions, GEMM+shift for stride-1 ones "
                "with at most 4 output channels, and the fused InstanceNorm+activation chains in C")
AMP_DTYPES = ("auto", "bf16", "fp16")
# options of a PyTorch model that `gantk bench` joins with "+" (e.g. amp+compile+triton): at most one of each group
OPTION_GROUPS = (("amp", "amp-bf16"), ("channels_last",), ("compile", "compile-max-autotune"), KERNELS[1:])
OPTIONS = tuple(o for group in OPTION_GROUPS for o in group)


def parse_options(name: str) -> list[str]:
    """The options a '+'-joined name combines ("eager" -> []); GantkError for an unknown or ill-formed one."""
    if name == "eager":
        return []
    parts = name.split("+")
    if any(p not in OPTIONS for p in parts) or any(sum(p in g for p in parts) > 1 for g in OPTION_GROUPS):
        raise GantkError(f"{name!r}: expected eager or options from {', '.join(OPTIONS)} joined by '+' (at most one "
                         "of each: amp or amp-bf16; compile or compile-max-autotune; triton or winograd)")
    return parts


def unavailable(parts: list[str], device: torch.device) -> str | None:
    """Why these options cannot run on `device` (None: they can)."""
    if "compile-max-autotune" in parts and device.type != "cuda":
        return "max-autotune tunes GPU kernels; CPU runs use plain compile"
    return None


def amp_dtype(option: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of an amp option ('auto'/'amp': fp16 on CUDA, bf16 on CPU)."""
    if option in ("bf16", "amp-bf16"):
        return torch.bfloat16
    if option == "fp16":
        return torch.float16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


class Precision:
    """Autocast + GradScaler in one place: bf16 on CPU, fp16 with loss scaling (or bf16) on CUDA."""

    def __init__(self, enabled: bool, dtype: str, device: torch.device):
        self.enabled = enabled
        self.device_type = device.type
        self.dtype = amp_dtype(dtype, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled and self.dtype == torch.float16)
        if self.enabled and device.type == "cpu" and self.dtype == torch.bfloat16 and not cpu_has_bf16():
            log.warning("--amp on a CPU without AVX512-BF16/AMX: bf16 convolutions run far slower than fp32 "
                        "here (see benchmarks/results/train_step_cpu.md); leave --amp off on this machine")

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer) -> None:
        self.scaler.step(optimizer)

    def update(self) -> None:
        self.scaler.update()


# --- applying them --------------------------------------------------------------------------------------
def apply_kernels(net: nn.Module, kernels: str = "none", warn: bool = True) -> nn.Module:
    """--kernels: swap `net`'s fusable chains for gantk.kernels' fused ops (triton) or its stride-1 3x3/4x4
    convolutions for Winograd ones (winograd), in place; none: leave it. `warn`: say so when winograd finds
    nothing."""
    if kernels == "none":
        return net
    if kernels == "winograd":
        if not patch_winograd(net) and warn:
            log.warning("--kernels winograd: %s has no stride-1 3x3 or 4x4 convolution (U-Nets and MLPs have none); "
                        "it runs unchanged", type(net).__name__)
        elif warn and any(p.is_cuda for p in net.parameters()):
            log.warning("--kernels winograd is the CPU speed path; on CUDA, cuDNN's own convolutions are faster")
        return net
    if kernels != "triton":
        raise GantkError(f"--kernels {kernels!r}: expected one of {', '.join(KERNELS)}")
    if not HAS_TRITON:
        log.warning("--kernels triton: the triton package is missing (pip install 'gantk[gpu]'); "
                    "the fused modules run torch ops")
    return patch(net)


def accelerate(net: nn.Module, parts: list[str], device: torch.device):
    """(callable, precision) running a copy of `net` with `parts` applied: kernels, then channels_last, amp,
    compile. `net` itself stays as it is (the eager reference). Module swaps alone (triton, winograd) leave
    the weights as they are, so their copy shares `net`'s Parameters and buffers (a deployment holds one
    set of weights, and so does the benchmark's row); channels_last converts them, so it copies them."""
    reason = unavailable(parts, device)
    if reason:
        raise GantkError(reason)
    if "channels_last" in parts:
        net = copy.deepcopy(net)
    elif {"triton", "winograd"} & set(parts):
        net = copy.deepcopy(net, {id(t): t for t in (*net.parameters(), *net.buffers())})
    if "winograd" in parts and not patch_winograd(net):
        raise GantkError("the network has no stride-1 3x3 or 4x4 convolution for Winograd")
    if "triton" in parts:
        apply_kernels(net, "triton")
    run, precision = net, "fp32"
    if "channels_last" in parts:
        net.to(memory_format=torch.channels_last)
        run = lambda x, *r: net(x.contiguous(memory_format=torch.channels_last), *r)  # noqa: E731
    amp = next((p for p in parts if p.startswith("amp")), None)
    if amp:
        dtype = amp_dtype(amp, device)
        inner, precision = run, "fp16" if dtype == torch.float16 else "bf16"

        def run(*xs):
            with torch.autocast(device.type, dtype=dtype):
                return inner(*xs)
    if "compile" in parts or "compile-max-autotune" in parts:
        run = torch.compile(run, mode="max-autotune" if "compile-max-autotune" in parts else None, dynamic=False)
    return run, precision


# --- module swaps ---------------------------------------------------------------------------------------
FUSED_ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh"}


class FusedResnetBlock(nn.Module):
    """ResnetBlock whose last norm adds the block input (same `conv_block` keys)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv_block = block.conv_block

    def forward(self, x):
        *body, last = self.conv_block
        h = x
        for layer in body:
            h = layer(h)
        return last(h, residual=x)


class FusedResidualBlock(nn.Module):
    """TransformerNet's ResidualBlock: x + IN(conv(IN+ReLU(conv(x)))) with both norms fused."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.in1, self.conv2, self.in2 = block.conv1, block.in1, block.conv2, block.in2
        self.in1.activation = "relu"

    def forward(self, x):
        return self.in2(self.conv2(self.in1(self.conv1(x))), residual=x)


def _reflect_pad(m: nn.Module) -> int | None:
    """p for ReflectionPad2d(p) with equal sides."""
    if type(m) is nn.ReflectionPad2d and len(set(m.padding)) == 1:
        return m.padding[0]
    return None


def _plain_conv(m: nn.Module) -> bool:
    """An unpadded, undilated, ungrouped nn.Conv2d with equal strides: what the fused conv computes."""
    return (type(m) is nn.Conv2d and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1
            and m.stride[0] == m.stride[1] and m.padding_mode == "zeros")


def fold_reflect_pads(model: nn.Module, make) -> int:
    """Every ReflectionPad2d(p) directly followed by a conv (adjacent in an nn.Sequential, or TransformerNet's
    ConvLayer) for which make(conv, p) gives a module: that module takes the conv's place and nn.Identity
    the pad's (indices, hence state-dict keys, stay). Returns how many pairs were folded."""
    folded = 0
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential):
            pairs = list(zip(m._modules, list(m._modules)[1:]))
        elif type(m) is ConvLayer:
            pairs = [("reflection_pad", "conv2d")]
        else:
            continue
        for a, b in pairs:
            p = _reflect_pad(m._modules[a])
            new = make(m._modules[b], p) if p is not None else None
            if new is not None:
                m._modules[a], m._modules[b] = nn.Identity(), new
                folded += 1
    return folded


def _fuse_sequence(seq: nn.Sequential) -> None:
    """Fold norm+activation pairs of `seq`, keeping every index (hence every key); a fused norm right after a
    convolution may overwrite that conv's output (`InstanceNormAct.inplace`: it is the only reader)."""
    keys = list(seq._modules)
    for a, b in zip(keys, keys[1:]):
        first, second = seq._modules[a], seq._modules[b]
        if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(second, InstanceNormAct):
            second.inplace = True
        if isinstance(first, InstanceNormAct) and first.activation == "none" and type(second) in FUSED_ACTIVATIONS:
            first.activation = FUSED_ACTIVATIONS[type(second)]
            first.negative_slope = getattr(second, "negative_slope", 0.2)
            seq._modules[b] = nn.Identity()


def _swap(m: nn.Module) -> nn.Module:
    """`m` with its norm chains fused (children first); the module to put in its place."""
    for name, child in list(m._modules.items()):
        if child is not None:
            m._modules[name] = _swap(child)
    if isinstance(m, nn.Sequential):
        _fuse_sequence(m)
    if type(m) is nn.InstanceNorm2d and not m.track_running_stats:
        return InstanceNormAct(m)
    if type(m) is ResnetBlock and isinstance(m.conv_block[-1], InstanceNormAct):
        return FusedResnetBlock(m)
    if type(m) is ResidualBlock and isinstance(m.in1, InstanceNormAct) and isinstance(m.in2, InstanceNormAct):
        return FusedResidualBlock(m)
    return m


def patch_norms(model: nn.Module) -> nn.Module:
    """Fuse `model`'s InstanceNorm + activation (+ residual) chains in place (no convolutions); return it."""
    if _swap(model) is not model:  # the top-level module itself was swapped: a bare norm or block
        raise GantkError("patch: pass the whole network, not a single norm or block")
    return model


def patch(model: nn.Module) -> nn.Module:
    """Fuse `model`'s matching chains in place (see the module docstring) and return it."""
    fold_reflect_pads(model, lambda conv, p: ReflectPadConv2d.from_conv(conv, p) if _plain_conv(conv) else None)
    return patch_norms(model)


def fused_modules(model: nn.Module) -> int:
    """How many fused modules `model` holds (0: nothing matched)."""
    return sum(isinstance(m, (ReflectPadConv2d, InstanceNormAct)) for m in model.modules())


def patch_winograd(model: nn.Module) -> int:
    """The CPU convolution path, in place: every stride-1 conv with at most MAX_OUT output channels becomes
    a ShiftConv2d, every other stride-1 3x3/4x4 conv a WinogradConv2d; both take over a ReflectionPad2d just
    before them (the pad's place gets an nn.Identity; Parameters and state-dict keys stay);
    InstanceNorm + activation (+ residual) chains are fused (`patch_norms`, C kernels on CPU), transposed
    convs become BandedConvTranspose2d and the other plain convs BandedConv2d (inference in bands of rows).
    Also keeps freed memory in the process (`keep_freed_memory`). Returns how many stride-1 convs were swapped (none: the net is left as it is)."""
    def with_pad(conv: nn.Module, pad: int) -> nn.Module | None:
        if conv.padding != (0, 0) or not (shift_applicable(conv) or winograd_applicable(conv)):
            return None
        return (ShiftConv2d if shift_applicable(conv) else WinogradConv2d).from_conv(conv, reflect_pad=pad)

    swapped, banded = fold_reflect_pads(model, with_pad), []
    for parent in model.modules():
        for name, child in parent._modules.items():
            new = (ShiftConv2d if shift_applicable(child) else WinogradConv2d if winograd_applicable(child)
                   else None)
            if new is not None:
                parent._modules[name] = new.from_conv(child)
                swapped += 1
            elif bands_applicable(child):
                banded.append((parent, name, child))
    if swapped:
        for parent, name, conv in banded:
            parent._modules[name] = (BandedConvTranspose2d if isinstance(conv, nn.ConvTranspose2d)
                                     else BandedConv2d).from_conv(conv)
        patch_norms(model)
        keep_freed_memory()
    return swapped
