"""Does an artifact still draw the same pictures? Errors against the eager fp32 model on real photos.

Thresholds per precision, errors measured on the [-1, 1] output scale, PSNR on [0, 255] images:
- fp32: max |err| <= 1e-4. fp32 rounding (unit 6e-8) through a few dozen layers gives ~1e-6 here
  (see tests); 1e-4 is still 1/80 of one 8-bit grey level, so a pass means identical PNGs.
- fp16: PSNR >= 40 dB. fp16's unit roundoff 2^-11 ~ 5e-4 is ~0.06 grey levels per rounding; over
  ~20 layers that is well under one level rms (> 50 dB). 40 dB (rms 2.5 levels) flags real breakage
  such as InstanceNorm overflow (which gives NaN/inf or PSNR < 20 dB) while tolerating accumulation.
  ONNX Runtime's CPU provider has no fp16 kernels for most ops and runs an fp16 graph in fp32 behind
  Casts (only the weights are rounded), which overstates fp16 accuracy; on CPU the report adds the PSNR of
  real half-precision arithmetic (`fp16_arithmetic`: the PyTorch model in fp16, normalisation in fp32 like
  the fp16 graph), graded by the same threshold.
- bf16: PSNR >= 32 dB: bf16 keeps 8 mantissa bits (unit 2^-8 = 8x fp16's), so its noise is ~18 dB
  above fp16's budget; 32 dB is rms ~6 levels, still visually faithful.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gantk.errors import GantkError
from gantk.export.spec import ExportSpec
from gantk.io import list_images, load_image, pil_to_tensor

THRESHOLDS = {"fp32": {"max_abs": 1e-4}, "fp16": {"psnr": 40.0}, "bf16": {"psnr": 32.0}}
PSNR_CAP = 150.0


def sample_photos(count: int = 2) -> list[Image.Image]:
    """Real photographs for parity checks: scikit-image's held-out test photos."""
    try:
        from skimage import data
    except ImportError:
        raise GantkError("parity needs real images: pass --parity_images DIR, or pip install scikit-image") from None
    return [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("chelsea", "rocket", "astronaut", "coffee")[:count]]


def load_photos(source: str | Path | None, count: int = 2) -> list[Image.Image]:
    if not source:
        return sample_photos(count)
    p = Path(source)
    files = [p] if p.is_file() else list_images(p)[:count]
    if not files:
        raise GantkError(f"--parity_images {source}: no images found")
    return [load_image(f) for f in files]


def _square(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
    return pil_to_tensor(img.convert("L" if channels == 1 else "RGB"))


def parity_batch(spec: ExportSpec, photos: list[Image.Image], size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The photos as one batch at size x size (plus a seeded z for multimodal generators)."""
    x = torch.stack([_square(p, size, spec.in_channels) for p in photos])
    if spec.nz:
        return x, torch.randn(len(photos), spec.nz, generator=torch.Generator().manual_seed(seed))
    return (x,)


def errors(ref: np.ndarray, out: np.ndarray) -> dict:
    """max/mean |err| on [-1, 1] and PSNR of the [0, 255] images."""
    if out.shape != ref.shape:
        raise GantkError(f"output shape {out.shape} differs from PyTorch's {ref.shape}")
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if not np.isfinite(d).all():
        return {"max_abs": math.inf, "mean_abs": math.inf, "psnr": 0.0}
    mse = float(np.mean((d * 127.5) ** 2))
    psnr = PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / mse))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "psnr": psnr}


def passes(err: dict, precision: str) -> bool:
    t = THRESHOLDS[precision]
    return err["max_abs"] <= t.get("max_abs", math.inf) and err["psnr"] >= t.get("psnr", 0.0)


@dataclass
class ParityReport:
    artifact: str
    backend: str
    precision: str
    rows: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r["pass"] for r in self.rows)

    def table(self) -> str:
        t = THRESHOLDS[self.precision]
        rule = ", ".join(f"{k} {'<=' if k == 'max_abs' else '>='} {v:g}" for k, v in t.items())
        lines = [f"parity of {self.artifact} ({self.backend}, {self.precision}; pass: {rule})",
                 f"  {'input':<16}{'max abs err':>13}{'mean abs err':>14}{'PSNR dB':>9}  result"]
        for r in self.rows:
            extra = [(FP16_ARITHMETIC, r[FP16_ARITHMETIC])] if FP16_ARITHMETIC in r else []
            for label, e in [(r["input"], r), *extra]:
                lines.append(f"  {label:<16}{e['max_abs']:>13.3g}{e['mean_abs']:>14.3g}{e['psnr']:>9.1f}  "
                             f"{'ok' if e['pass'] else 'FAIL'}")
        if any(FP16_ARITHMETIC in r for r in self.rows):
            lines.append(f"  ({FP16_ARITHMETIC}: {FP16_ARITHMETIC_NOTE})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "backend": self.backend, "precision": self.precision,
                "thresholds": THRESHOLDS[self.precision], "passed": self.passed, "rows": self.rows}


@contextlib.contextmanager
def no_tf32():
    """fp32 on a GPU really in fp32 (cuBLAS/cuDNN otherwise may round inputs to TF32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Comparator:
    """The one comparator: real-photo inputs and eager fp32 reference outputs per (batch, size), each made
    once, and the grade of any backend's output against them."""

    def __init__(self, spec: ExportSpec, photos: list[Image.Image], device="cpu"):
        self.spec, self.photos, self.device = spec, photos, torch.device(device)
        self._inputs: dict = {}
        self._refs: dict = {}

    def inputs(self, batch: int, size: int) -> tuple[torch.Tensor, ...]:
        """The photos at size x size (plus a seeded z), repeated or cut to `batch`, on the device."""
        if size % self.spec.multiple:
            raise GantkError(f"size {size}: must be a multiple of {self.spec.multiple} for this generator")
        if (batch, size) not in self._inputs:
            base = parity_batch(self.spec, self.photos, size)
            reps = -(-batch // base[0].shape[0])
            self._inputs[batch, size] = tuple(t.repeat(reps, *[1] * (t.dim() - 1))[:batch].to(self.device)
                                              for t in base)
        return self._inputs[batch, size]

    def reference(self, batch: int, size: int) -> np.ndarray:
        """Eager fp32 output of the spec's module (TF32 off on GPU)."""
        if (batch, size) not in self._refs:
            net = self.spec.net.to(self.device).float()
            with no_tf32(), torch.no_grad():
                self._refs[batch, size] = net(*self.inputs(batch, size)).float().cpu().numpy()
        return self._refs[batch, size]

    def grade(self, out: torch.Tensor, batch: int, size: int, precision: str) -> dict:
        """max/mean |err|, PSNR and whether they pass `precision`'s threshold."""
        err = errors(self.reference(batch, size), out.detach().float().cpu().numpy())
        return {**err, "pass": passes(err, precision)}


FP16_ARITHMETIC = "fp16 arithmetic"
FP16_ARITHMETIC_NOTE = ("PyTorch CPU in real fp16, normalisation in fp32 as in the fp16 graph; ONNX Runtime's "
                        "CPU provider computes the fp16 graph in fp32, so its row overstates fp16 accuracy")
NORM_LAYERS = (torch.nn.modules.instancenorm._InstanceNorm, torch.nn.modules.batchnorm._BatchNorm,
               torch.nn.GroupNorm, torch.nn.LayerNorm)


class _Fp32(torch.nn.Module):
    """A normalisation layer run in fp32 inside a half-precision network (as convert_precision keeps it)."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x):
        return self.norm(x.float()).to(x.dtype)


def half_model(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of `net` computing in fp16 with its normalisation layers in fp32 (inputs/outputs fp16)."""
    half = copy.deepcopy(net).cpu().half().eval()
    for name, module in list(half.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, NORM_LAYERS):
                setattr(module, child_name, _Fp32(child))
    return half


def computes_fp16_in_fp32(runner) -> bool:
    """Whether the runner stands in fp32 arithmetic for an fp16 graph (ONNX Runtime's CPU provider)."""
    return runner.backend == "onnxruntime-cpu"


def check_parity(spec: ExportSpec, runner, photos: list[Image.Image], sizes: list[int],
                 precision: str = "fp32") -> ParityReport:
    """Run the artifact and the eager model on the photos at each size (one batch each). An fp16 artifact
    on a runtime that computes it in fp32 also gets the `fp16 arithmetic` figure, and must pass both."""
    report = ParityReport(str(runner.path), runner.backend, precision)
    compare = Comparator(spec, photos)
    half = half_model(spec.net) if precision == "fp16" and computes_fp16_in_fp32(runner) else None
    for size in sizes:
        inputs = compare.inputs(len(photos), size)
        with torch.no_grad():
            out = runner.run_torch(*inputs)
        row = {"input": f"{len(photos)}x{spec.in_channels}x{size}x{size}",
               **compare.grade(out, len(photos), size, precision)}
        if half is not None:
            with torch.no_grad():
                true16 = half(*(t.cpu().half() for t in inputs))
            row[FP16_ARITHMETIC] = compare.grade(true16, len(photos), size, precision)
            row["pass"] = row["pass"] and row[FP16_ARITHMETIC]["pass"]
        report.rows.append(row)
    return report
