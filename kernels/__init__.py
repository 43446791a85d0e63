"""gantk.kernels: Triton kernels for the generators' memory-bound chains.

- `instance_norm_act`: InstanceNorm (+ affine) + none|relu|leaky_relu|tanh (+ residual), fp32 statistics.
- `reflect_pad_conv2d`: reflect-padded convolution as an implicit GEMM, no padded copy.
- `patch(model)`: swap a gantk generator's matching modules for fused ones, in place (`patch_norms(model)`:
  only the norm chains); on CPU the fused norms run C kernels (`native`, `norm.c`).
- `winograd_conv2d` / `patch_winograd(model)`: Winograd F(4x4, 3x3) and F(3x3, 4x4) for stride-1 3x3/4x4
  convolutions (forward and backward; GEMMs in torch, tile transforms in C from `tiles.c`, torch ops without
  a compiler), the CPU speed path (`--kernels winograd`), with `shift_conv2d` (one GEMM + shifted adds) for
  stride-1 convolutions to at most 4 channels.

Both ops are `torch.library.custom_op`s (`gantk::instance_norm_act`, `gantk::reflect_pad_conv2d`) with
fake kernels and registered autograd, so they trace under torch.compile(fullgraph=True) as opaque
calls. We use custom_op rather than triton_op: its implementation picks Triton (CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1) or torch ops (CPU) at run time, and the same registration is
exercised by the CPU test suite, interpreter included; triton_op's traced-into kernels fail on CPU
fake tensors under the interpreter. Exports (ONNX, torch.export/AOTI) record the plain torch ops.
"""
from gantk.kernels.instance_norm import ACTIVATIONS, instance_norm_act
from gantk.kernels.patch import (FusedResidualBlock, FusedResnetBlock, InstanceNormAct, ReflectPadConv2d, fused_modules,
                                 patch, patch_norms)
from gantk.kernels.reflect_conv import reflect_pad_conv2d
from gantk.kernels.runtime import HAS_TRITON, INTERPRET, use_triton
from gantk.kernels.shift_conv import ShiftConv2d, shift_conv2d
from gantk.kernels.winograd import WinogradConv2d, patch_winograd, winograd_conv2d

__all__ = ["ACTIVATIONS", "HAS_TRITON", "INTERPRET", "FusedResidualBlock", "FusedResnetBlock", "InstanceNormAct",
           "ReflectPadConv2d", "ShiftConv2d", "WinogradConv2d", "fused_modules", "instance_norm_act", "patch",
           "patch_norms", "patch_winograd", "reflect_pad_conv2d", "shift_conv2d", "use_triton", "winograd_conv2d"]
