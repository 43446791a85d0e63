"""gantk.kernels: Triton kernels for the generators' memory-bound chains.

- `instance_norm_act`: InstanceNorm (+ affine) + none|relu|leaky_relu|tanh (+ residual), fp32 statistics.
- `reflect_pad_conv2d`: reflect-padded convolution as an implicit GEMM, no padded copy.
- `ReflectPadConv2d`, `InstanceNormAct`: their nn.Module faces; on CPU the fused norms run C kernels
  (`native`, `norm.c`).
- `winograd_conv2d` / `WinogradConv2d`: Winograd F(4x4, 3x3) and F(3x3, 4x4) for stride-1 3x3/4x4
  convolutions (forward and backward; GEMMs in torch, tile transforms in C from `tiles.c`, torch ops without
  a compiler; on AVX-512 CPUs the inference GEMMs in C too, `gemm.c`), the CPU speed path, with
  `shift_conv2d` (one GEMM + shifted adds) for stride-1 convolutions to at most 4 channels and
  `BandedConvTranspose2d` / `BandedConv2d` (transposed and other plain convs without gradients in bands of
  output rows).

Ops only: swapping a network's modules for these is `gantk.acceleration`'s work (`patch`, `patch_winograd`).

Both ops are `torch.library.custom_op`s (`gantk::instance_norm_act`, `gantk::reflect_pad_conv2d`) with
fake kernels and registered autograd, so they trace under torch.compile(fullgraph=True) as opaque
calls. We use custom_op rather than triton_op: its implementation picks Triton (CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1) or torch ops (CPU) at run time, and the same registration is
exercised by the CPU test suite, interpreter included; triton_op's traced-into kernels fail on CPU
fake tensors under the interpreter. Exports (ONNX, torch.export/AOTI) record the plain torch ops.
"""
from gantk.kernels.instance_norm import instance_norm_act
from gantk.kernels.modules import InstanceNormAct, ReflectPadConv2d
from gantk.kernels.native import ACTIVATIONS
from gantk.kernels.reflect_conv import reflect_pad_conv2d
from gantk.kernels.runtime import HAS_TRITON, INTERPRET, use_triton
from gantk.kernels.bands import BandedConv2d, BandedConvTranspose2d, banded_conv2d, banded_conv_transpose2d
from gantk.kernels.shift_conv import ShiftConv2d, shift_conv2d
from gantk.kernels.winograd import WinogradConv2d, winograd_conv2d

__all__ = ["ACTIVATIONS", "HAS_TRITON", "INTERPRET", "BandedConv2d", "BandedConvTranspose2d", "InstanceNormAct",
           "ReflectPadConv2d", "ShiftConv2d", "WinogradConv2d", "banded_conv2d", "banded_conv_transpose2d",
           "instance_norm_act", "reflect_pad_conv2d", "shift_conv2d", "use_triton", "winograd_conv2d"]
