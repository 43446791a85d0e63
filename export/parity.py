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

Quality (`Quality`, optional): each row also records the LPIPS of the artifact's output against eager's (given
LPIPS weights), and each report the FID change against a reference folder (given Inception weights):
FID(artifact outputs, folder) - FID(eager outputs, folder) over the outputs of every size. `--quality_gate`
limits either, and a report over a limit fails like a parity miss.
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

from gantk import metrics
from gantk.errors import GantkError
from gantk.export.spec import ExportSpec
from gantk.io import list_images, load_image, pil_to_tensor
from gantk.nn.weights import weights_record

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
    fid: dict | None = None  # Quality.fid_change's record
    gate: dict[str, float] = field(default_factory=dict)  # --quality_gate: {"lpips" | "fid": largest allowed}

    @property
    def parity_passed(self) -> bool:
        return bool(self.rows) and all(r["pass"] for r in self.rows)

    def gate_misses(self) -> list[str]:
        """`LPIPS 0.0021 (gate 0)` for each quality figure above its --quality_gate limit."""
        graded = [g for r in self.rows for g in (r, r.get(FP16_ARITHMETIC)) if g and "lpips" in g]
        worst = {"lpips": max((g["lpips"] for g in graded), default=None), "fid": self.fid and self.fid["change"]}
        return [f"{GATES[k]} {'not measured' if worst[k] is None else format(worst[k], '.4g')} (gate {limit:g})"
                for k, limit in self.gate.items() if worst[k] is None or not worst[k] <= limit]

    @property
    def passed(self) -> bool:
        return self.parity_passed and not self.gate_misses()

    def table(self) -> str:
        t = THRESHOLDS[self.precision]
        rule = ", ".join(f"{k} {'<=' if k == 'max_abs' else '>='} {v:g}" for k, v in t.items())
        gate = "".join(f", {GATES[k]} <= {v:g}" for k, v in self.gate.items())
        lp = any("lpips" in r for r in self.rows)
        lines = [f"parity of {self.artifact} ({self.backend}, {self.precision}; pass: {rule}{gate})",
                 f"  {'input':<16}{'max abs err':>13}{'mean abs err':>14}{'PSNR dB':>9}{'    LPIPS' if lp else ''}"
                 "  result"]
        for r in self.rows:
            extra = [(FP16_ARITHMETIC, r[FP16_ARITHMETIC])] if FP16_ARITHMETIC in r else []
            for label, e in [(r["input"], r), *extra]:
                lpips = (f"{e['lpips']:>9.2g}" if "lpips" in e else " " * 9) if lp else ""
                lines.append(f"  {label:<16}{e['max_abs']:>13.3g}{e['mean_abs']:>14.3g}{e['psnr']:>9.1f}{lpips}  "
                             f"{'ok' if e['pass'] else 'FAIL'}")
        if any(FP16_ARITHMETIC in r for r in self.rows):
            lines.append(f"  ({FP16_ARITHMETIC}: {FP16_ARITHMETIC_NOTE})")
        if self.fid:
            lines.append(f"  FID change {self.fid['change']:+.4f} (artifact {self.fid['artifact']:.4f}, eager "
                         f"{self.fid['eager']:.4f}; {self.fid['images']} outputs vs {self.fid['reference_images']} "
                         "reference images)")
        lines += [f"  quality gate FAIL: {m}" for m in self.gate_misses()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "backend": self.backend, "precision": self.precision,
                "thresholds": THRESHOLDS[self.precision], "passed": self.passed, "rows": self.rows,
                **({"fid": self.fid} if self.fid else {}),
                **({"quality_gate": self.gate, "gate_passed": not self.gate_misses()} if self.gate else {})}


GATES = {"lpips": "LPIPS", "fid": "FID change"}  # --quality_gate keys -> what they limit


def parse_gate(text: str | None) -> dict[str, float]:
    """--quality_gate "lpips=0.01,fid=0.5" -> {"lpips": 0.01, "fid": 0.5}; a one-line GantkError otherwise."""
    gate = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if key.strip() not in GATES or not math.isfinite(limit) or key.strip() in gate:
            raise GantkError(f"--quality_gate {text}: expected lpips=MAX and/or fid=MAX, comma-separated "
                             f"(e.g. lpips=0.01,fid=0.5), got {part!r}")
        gate[key.strip()] = limit
    return gate


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """NCHW outputs with 3 channels (grey repeated), as LPIPS and Inception take them."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Quality:
    """LPIPS of artifact vs eager outputs (`lpips_net`), the FID change against a reference folder's Inception
    features (`inception` + `reference`), and the --quality_gate; `record` describes them for the manifest."""

    def __init__(self, lpips_net=None, inception=None, reference: np.ndarray | None = None,
                 gate: dict | None = None, record: dict | None = None, device="cpu"):
        self.lpips_net, self.inception, self.reference = lpips_net, inception, reference
        self.gate, self.record, self.device = gate or {}, record or {}, device
        self._eager_fid: dict = {}

    def lpips(self, ref: np.ndarray, out: torch.Tensor) -> dict:
        """{"lpips": mean over the batch} of `out` against the eager output `ref`; {} without LPIPS weights."""
        if self.lpips_net is None:
            return {}
        return {"lpips": metrics.lpips(self.lpips_net, _rgb(torch.from_numpy(ref)), _rgb(out.detach().float().cpu()))}

    def fid(self, outputs: list[torch.Tensor]) -> float:
        images = (img for batch in outputs for img in _rgb(batch.detach().float().cpu()))
        return metrics.fid_from_features(metrics.extract_features(self.inception, images, device=self.device),
                                         self.reference)

    def fid_change(self, outputs: list[torch.Tensor], refs: list[np.ndarray]) -> dict | None:
        """FID(outputs, reference) - FID(eager outputs `refs`, reference), both over every image; None without
        Inception weights."""
        if self.inception is None:
            return None
        key = tuple(r.shape for r in refs)
        if key not in self._eager_fid:
            self._eager_fid[key] = self.fid([torch.from_numpy(r) for r in refs])
        artifact, eager = self.fid(outputs), self._eager_fid[key]
        return {"artifact": artifact, "eager": eager, "change": artifact - eager,
                "images": sum(len(r) for r in refs), "reference_images": len(self.reference)}


def load_quality(lpips_net: str = "alex", lpips_weights: str | None = None, lpips_backbone: str | None = None,
                 eval_images: str | None = None, inception_weights: str | None = None, gate: str | None = None,
                 sizes: list[int] = (), device="cpu", log=print, outputs: int = 2) -> Quality:
    """The `Quality` the options ask for, every option checked before anything is loaded: LPIPS when its
    weights are given (else a note, once), FID when --eval_images is given (Inception weights then required),
    and a --quality_gate only over figures that will be measured; `outputs`: images per FID (at least 2)."""
    from gantk.nn.inception import load_fid_inception, resolve_inception_weights
    from gantk.nn.lpips import NETS, load_lpips, lpips_requested, resolve_lpips_weights
    limits, record = parse_gate(gate), {}
    use_lpips = lpips_requested(lpips_weights, lpips_backbone)
    if use_lpips:
        heads, backbone = resolve_lpips_weights(lpips_weights, lpips_backbone, lpips_net)
        small = [s for s in sizes if s < NETS[lpips_net].min_size]
        if small:
            raise GantkError(f"--lpips-net {lpips_net} needs images of at least {NETS[lpips_net].min_size} px, "
                             f"got size {small[0]}")
        record.update(lpips={"net": lpips_net, "version": "0.1", "weights": weights_record(heads), "backbone": weights_record(backbone),
                             "protocol": "artifact output vs eager output, [-1, 1], full size; mean over the batch"})
    else:
        record["lpips"] = LPIPS_NOTE
        log(f"note: {LPIPS_NOTE}")
    if "lpips" in limits and not use_lpips:
        raise GantkError("--quality_gate lpips needs LPIPS weights: --lpips-weights and --lpips-backbone (or "
                         "GANTK_LPIPS and GANTK_LPIPS_BACKBONE)")
    if "fid" in limits and not eval_images:
        raise GantkError("--quality_gate fid needs --eval_images DIR (the reference images of the FID)")
    files = []
    if eval_images:
        folder = Path(eval_images)
        files = list_images(folder) if folder.is_dir() else []
        if len(files) < 2:
            raise GantkError(f"--eval_images {eval_images}: expected a folder of at least 2 images (the FID "
                             f"reference set)")
        if outputs < 2:
            raise GantkError(f"--eval_images: an FID needs at least 2 outputs, this run makes {outputs} per "
                             "backend (more --batches or --sizes)")
        weights = resolve_inception_weights(inception_weights)
    quality = Quality(load_lpips(lpips_net, heads, backbone, device) if use_lpips else None, gate=limits,
                      record=record, device=device)
    if eval_images:
        quality.inception = load_fid_inception(weights, device)
        quality.reference = metrics.extract_features(
            quality.inception, (pil_to_tensor(load_image(f, "RGB")) for f in files), device=device)
        record["fid"] = {"reference": str(Path(eval_images).resolve()), "reference_images": len(files),
                         "weights": weights_record(weights), "protocol": "FID(artifact outputs, reference) - FID(eager outputs, "
                         "reference), outputs of every parity size pooled; " + metrics.PROTOCOL["features"]}
    if limits:
        record["gate"] = limits
    return quality


LPIPS_NOTE = ("LPIPS left out: give --lpips-weights (the published v0.1 heads) and --lpips-backbone "
              "(torchvision's weights) to record it")


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

    def __init__(self, spec: ExportSpec, photos: list[Image.Image], device="cpu", quality: Quality | None = None):
        self.spec, self.photos, self.device = spec, photos, torch.device(device)
        self.quality = quality or Quality()
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
        """max/mean |err|, PSNR and whether they pass `precision`'s threshold (+ LPIPS given its weights)."""
        ref = self.reference(batch, size)
        err = errors(ref, out.detach().float().cpu().numpy())
        lpips = self.quality.lpips(ref, out) if math.isfinite(err["max_abs"]) else {}
        return {**err, **lpips, "pass": passes(err, precision)}

    def fid_change(self, outputs: dict[tuple[int, int], torch.Tensor]) -> dict | None:
        """The FID change of {(batch, size): output} against eager's outputs of the same shapes."""
        keys = sorted(outputs)
        return self.quality.fid_change([outputs[k] for k in keys], [self.reference(*k) for k in keys])


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
                 precision: str = "fp32", quality: Quality | None = None) -> ParityReport:
    """Run the artifact and the eager model on the photos at each size (one batch each). An fp16 artifact
    on a runtime that computes it in fp32 also gets the `fp16 arithmetic` figure, and must pass both.
    `quality` adds LPIPS per row, the FID change over all sizes and its --quality_gate."""
    compare = Comparator(spec, photos, quality=quality)
    report = ParityReport(str(runner.path), runner.backend, precision, gate=compare.quality.gate)
    half = half_model(spec.net) if precision == "fp16" and computes_fp16_in_fp32(runner) else None
    outputs = {}
    for size in sizes:
        inputs = compare.inputs(len(photos), size)
        with torch.no_grad():
            out = outputs[len(photos), size] = runner.run_torch(*inputs)
        row = {"input": f"{len(photos)}x{spec.in_channels}x{size}x{size}",
               **compare.grade(out, len(photos), size, precision)}
        if half is not None:
            with torch.no_grad():
                true16 = half(*(t.cpu().half() for t in inputs))
            row[FP16_ARITHMETIC] = compare.grade(true16, len(photos), size, precision)
            row["pass"] = row["pass"] and row[FP16_ARITHMETIC]["pass"]
        report.rows.append(row)
    report.fid = compare.fid_change(outputs)
    return report
