"""`patch(model)`: swap a network's reflect-pad/conv/InstanceNorm/activation chains for the fused ops, in place.

What is swapped (state-dict keys and Parameter objects stay the same, so checkpoints load and existing
optimizers keep working; index-preserving nn.Identity modules take the places of folded layers):
- in any nn.Sequential: ReflectionPad2d(p) + Conv2d(padding 0)   -> Identity + ReflectPadConv2d;
  InstanceNorm2d + ReLU | LeakyReLU | Tanh                       -> InstanceNormAct(act) + Identity;
- any other InstanceNorm2d (no running statistics)               -> InstanceNormAct("none");
- ResnetBlock (x + conv_block(x))                                -> the residual add moves into its last norm;
- TransformerNet: ConvLayer's pad + conv, ResidualBlock (IN + ReLU, IN + residual). Its top-level
  ReLUs are calls in TransformerNet.forward, not modules, so they stay separate ops.
BatchNorm nets (the U-Net of pix2pix, BicycleGAN with batch norm) have no matching chain and are left
as they are; zero-padded (strided) convs and transposed convs stay cuDNN's, their norm + ReLU is fused.
On CPU the fused norms run C kernels (`native`; torch ops without a compiler or for other dtypes and
layouts), the fused convs torch ops (Triton only under TRITON_INTERPRET=1); while exporting they record
exactly the unpatched modules' ops. `patch_norms` does the norm part alone (the CPU path of
`--kernels winograd`).
"""
from __future__ import annotations

import torch.nn as nn

from gantk.errors import GantkError
from gantk.kernels.instance_norm import instance_norm_act
from gantk.kernels.reflect_conv import reflect_pad_conv2d
from gantk.kernels.runtime import exporting

FUSED_ACTIVATIONS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh"}


class ReflectPadConv2d(nn.Conv2d):
    """Conv2d with reflect padding folded into the kernel's indexing (no padded copy)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, padding: int) -> "ReflectPadConv2d":
        """A module sharing `conv`'s Parameters, preceded by ReflectionPad2d(padding)."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=padding,
                  bias=conv.bias is not None, padding_mode="reflect", device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        return new

    def _conv_forward(self, x, weight, bias):
        if exporting():  # F.pad(reflect) + conv, as the unpatched pair
            return super()._conv_forward(x, weight, bias)
        return reflect_pad_conv2d(x, weight, bias, self.padding[0], self.stride[0])


class InstanceNormAct(nn.Module):
    """InstanceNorm2d (+ affine) fused with an activation; forward(x, residual) also adds a residual."""

    def __init__(self, norm: nn.InstanceNorm2d, activation: str = "none", negative_slope: float = 0.2):
        super().__init__()
        self.num_features, self.eps, self.affine = norm.num_features, norm.eps, norm.affine
        self.register_parameter("weight", norm.weight)  # the same Parameters (None without affine)
        self.register_parameter("bias", norm.bias)
        self.activation, self.negative_slope = activation, negative_slope

    def forward(self, x, residual=None):
        return instance_norm_act(x, self.weight, self.bias, self.eps, self.activation, self.negative_slope, residual)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, activation={self.activation}"


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
    from gantk.models.style import ConvLayer
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
    """Fold norm+activation pairs of `seq`, keeping every index (hence every key)."""
    keys = list(seq._modules)
    for a, b in zip(keys, keys[1:]):
        first, second = seq._modules[a], seq._modules[b]
        if isinstance(first, InstanceNormAct) and first.activation == "none" and type(second) in FUSED_ACTIVATIONS:
            first.activation = FUSED_ACTIVATIONS[type(second)]
            first.negative_slope = getattr(second, "negative_slope", 0.2)
            seq._modules[b] = nn.Identity()


def _swap(m: nn.Module) -> nn.Module:
    """`m` with its norm chains fused (children first); the module to put in its place."""
    from gantk.models.style import ResidualBlock
    from gantk.nn.generators import ResnetBlock
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
        raise GantkError("kernels.patch: pass the whole network, not a single norm or block")
    return model


def patch(model: nn.Module) -> nn.Module:
    """Fuse `model`'s matching chains in place (see the module docstring) and return it."""
    fold_reflect_pads(model, lambda conv, p: ReflectPadConv2d.from_conv(conv, p) if _plain_conv(conv) else None)
    return patch_norms(model)


def fused_modules(model: nn.Module) -> int:
    """How many fused modules `model` holds (0: nothing matched)."""
    return sum(isinstance(m, (ReflectPadConv2d, InstanceNormAct)) for m in model.modules())
