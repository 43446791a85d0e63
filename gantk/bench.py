"""`gantk bench`: latency, throughput, memory and parity of one generator on every backend.

Each backend turns the generator into a callable (eager variants, torch.compile, Triton kernels, or an
exported artifact run through gantk.export's runners). All run the same real photos; every output is
compared with eager fp32 and graded against the precision's threshold (gantk.export.parity), so a fast
but wrong backend is reported as FAIL next to its speed. Backends that cannot run here stay in the
table with the reason."""
from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import re
import resource
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gantk.errors import GantkError

# Options of the PyTorch model, which combine with "+" (e.g. amp+compile+kernels), and exported artifacts.
MODIFIERS = ("amp", "amp-bf16", "channels_last", "kernels", "winograd", "compile", "compile-max-autotune")
EXPORTED = ("aoti", "ort-cpu", "ort-cuda", "ort-trt", "trt-fp32", "trt-fp16")
BACKENDS = ("eager", "amp", "amp-bf16", "channels_last", "compile", "compile-max-autotune", "kernels",
            "amp+compile+kernels", "amp-bf16+compile+kernels", "winograd", *EXPORTED)  # the default GPU list
CPU_DEFAULT = ("eager", "amp", "channels_last", "compile", "kernels", "winograd", "aoti", "ort-cpu", "trt-fp32")
# Data-sheet peaks by GPU name (first match): HBM TB/s, and dense TFLOP/s of fp32 (CUDA cores), tf32 and
# 16-bit tensor cores (no sparsity), for bandwidth fractions and MFU
_H100_SXM = {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}
_A100 = {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}
GPU_PEAKS = [(r"H200", 4.8, _H100_SXM),
             (r"H100.*NVL", 3.9, {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5}),
             (r"H100.*PCIe", 2.0, {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0}),
             (r"H100", 3.35, _H100_SXM),
             (r"A100.*80GB.*PCIe", 1.935, _A100), (r"A100.*80GB", 2.039, _A100), (r"A100", 1.555, _A100),
             (r"L40S", 0.864, {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0}),
             (r"L4\b", 0.3, {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0})]


def backend_parts(name: str) -> list[str]:
    """The options a backend name combines ("eager" -> []); GantkError for an unknown or ill-formed one."""
    if name == "eager" or name in EXPORTED:
        return [] if name == "eager" else [name]
    parts = name.split("+")
    bad = [p for p in parts if p not in MODIFIERS]
    if bad or len(set(parts)) < len(parts) or sum(p.startswith("amp") for p in parts) > 1 \
            or sum(p.startswith("compile") for p in parts) > 1 or {"kernels", "winograd"} <= set(parts):
        raise GantkError(f"--backends {name!r}: expected eager, one of {', '.join(EXPORTED)}, or options from "
                         f"{', '.join(MODIFIERS)} joined by '+' (one amp, one compile, kernels or winograd)")
    return parts


def gpu_peaks(name: str) -> tuple[float, dict[str, float]] | None:
    """(HBM TB/s, {precision: dense TFLOP/s}) from the data sheet of GPU `name`; None when not in the table."""
    return next(((tbps, flops) for pattern, tbps, flops in GPU_PEAKS if re.search(pattern, name, re.I)), None)


class Unavailable(Exception):
    """This backend cannot run on this machine; the message says why."""


@dataclass
class Prepared:
    run: Callable[..., torch.Tensor]   # inputs (torch, on the bench device) -> output tensor
    precision: str                     # parity threshold to apply (fp32 / fp16 / bf16)
    build_s: float = 0.0               # export / compile / engine build before the first call


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def prepare(name: str, spec, device: torch.device, workdir: Path, max_batch: int, max_size: int) -> Prepared:
    """Build backend `name` for spec.net on `device` (raises Unavailable with a reason)."""
    net = spec.net.to(device).eval()
    t0 = time.perf_counter()
    parts = backend_parts(name)
    if name == "aoti":
        from gantk.export.aoti import AotiRunner, export_aoti
        path = export_aoti(spec, workdir / "model.pt2", max_batch=max(max_batch, 2), max_size=max_size, device=str(device))
        runner = AotiRunner(path, device=str(device))
        return Prepared(lambda *xs: runner.run_torch(*xs), "fp32", time.perf_counter() - t0)
    if name.startswith("ort"):
        return _prepare_ort(name, spec, device, workdir, t0)
    if name.startswith("trt"):
        return _prepare_trt(name, spec, device, workdir, max_batch, max_size, t0)
    return _prepare_torch(parts, net, device)


def _prepare_torch(parts: list[str], net, device: torch.device) -> Prepared:
    """The PyTorch model with `parts` applied: kernels or winograd, then channels_last, amp, compile."""
    if "kernels" in parts:
        try:
            from gantk.kernels import patch
        except ImportError as e:
            raise Unavailable(f"gantk.kernels not importable ({e})") from None
        if device.type != "cuda":
            raise Unavailable("Triton kernels need a CUDA GPU (on CPU the fast path is the winograd backend)")
    if "compile-max-autotune" in parts and device.type != "cuda":
        raise Unavailable("max-autotune tunes GPU kernels; CPU runs use plain compile")
    if {"kernels", "winograd", "channels_last"} & set(parts):
        net = copy.deepcopy(net)  # one copy to change; spec.net stays the eager reference
    if "kernels" in parts:
        patch(net)
    if "winograd" in parts:
        from gantk.kernels.winograd import patch_winograd
        if not patch_winograd(net):
            raise Unavailable("the generator has no stride-1 3x3 or 4x4 convolution for Winograd")
    run, precision = net, "fp32"
    if "channels_last" in parts:
        net.to(memory_format=torch.channels_last)
        run = lambda x, *r: net(x.contiguous(memory_format=torch.channels_last), *r)  # noqa: E731
    amp = next((p for p in parts if p.startswith("amp")), None)
    if amp:
        dtype = torch.bfloat16 if amp == "amp-bf16" else _amp_dtype(device)
        inner, precision = run, "fp16" if dtype == torch.float16 else "bf16"

        def run(*xs):
            with torch.autocast(device.type, dtype=dtype):
                return inner(*xs)
    if "compile" in parts or "compile-max-autotune" in parts:
        run = torch.compile(run, mode="max-autotune" if "compile-max-autotune" in parts else None, dynamic=False)
    return Prepared(run, precision)


def _onnx_file(spec, workdir: Path, precision: str = "fp32") -> Path:
    from gantk.export.onnx import export_onnx, write_precision_variant
    base = workdir / "model.onnx"
    if not base.exists():
        export_onnx(spec, base)
    if precision == "fp32":
        return base
    path = base.with_suffix(f".{precision}.onnx")
    return path if path.exists() else write_precision_variant(base, precision)


def _prepare_ort(name, spec, device, workdir, t0) -> Prepared:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Unavailable("onnxruntime is not installed (pip install 'gantk[export]')") from None
    from gantk.export.ort import PROVIDERS, OrtRunner
    ep = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[name]
    first = PROVIDERS[ep][0]
    first = first[0] if isinstance(first, tuple) else first
    if first not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime here has no {first} (install onnxruntime-gpu on a CUDA machine)")
    runner = OrtRunner(_onnx_file(spec, workdir), providers=PROVIDERS[ep],
                       threads=torch.get_num_threads() if ep == "cpu" else 0)

    def run(*xs):
        return torch.from_numpy(runner(*[x.cpu() for x in xs])).to(device)
    return Prepared(run, "fp32", time.perf_counter() - t0)


def _prepare_trt(name, spec, device, workdir, max_batch, max_size, t0) -> Prepared:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Unavailable("TensorRT is not installed (optional extra gantk[trt]; needs an NVIDIA GPU)") from None
    if device.type != "cuda":
        raise Unavailable("TensorRT engines need a CUDA GPU")
    from gantk.export.tensorrt import TrtRunner, build_engine, profile_shapes
    precision = name.split("-")[1]
    src = _onnx_file(spec, workdir, precision)
    shapes = profile_shapes(spec.input_names, spec.in_channels, spec.nz, (1, max_batch, max_batch),
                            (spec.multiple, max_size, max_size))
    runner = TrtRunner(build_engine(src, workdir / f"model.{precision}.plan", shapes, precision))
    return Prepared(lambda *xs: runner.run_torch(dict(zip(spec.input_names, xs))), precision, time.perf_counter() - t0)


@contextlib.contextmanager
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def timings(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call after `warmup` calls: CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000)
    else:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


class PeakMemory:
    """Peak memory of one row, in MB: allocated tensors on a GPU (torch's counter); on a CPU the process's
    peak resident set (VmHWM), restarted per row after returning freed heap to the OS, so that each row
    counts what it holds (Linux; elsewhere the process-lifetime peak, and `per_row` is False)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.per_row = device.type == "cuda" or self._restart()

    def _restart(self) -> bool:
        try:
            ctypes.CDLL(None).malloc_trim(0)  # glibc: give cached free chunks back, or they count as resident
        except (OSError, AttributeError):
            pass
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5": restart the peak-RSS count at the current RSS
            return True
        except OSError:
            return False

    def restart(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.per_row:
            self._restart()

    def mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.per_row:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flops_per_image(net, inputs) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*[t[:1] for t in inputs])
    return float(counter.get_total_flops())


def run_bench(spec, backends: list[str], batches: list[int], sizes: list[int], photos, device: str = "cpu",
              warmup: int = 2, repeats: int = 10, threads: int = 0, budget_s: float = 0.0, log=print) -> dict:
    """Measure every backend at every (batch, size); returns the results document. With `budget_s`, a
    backend whose first call is slow gets fewer warm-up and timed runs (at least one timed run; the first
    call then counts as the warm-up; `runs` says how many were timed)."""
    from gantk.export.parity import errors, parity_batch, passes
    from gantk.export.pipeline import environment
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GantkError("--device cuda: no CUDA GPU here")
    if threads:
        torch.set_num_threads(threads)
    for s in sizes:
        if s % spec.multiple:
            raise GantkError(f"--sizes {s}: must be a multiple of {spec.multiple} for this generator")
    for name in backends:
        backend_parts(name)  # an ill-formed name fails before anything runs
    env = {**environment(), "threads": torch.get_num_threads(), "device": str(dev),
           "cpu": _cpu_name()}
    peaks = (gpu_peaks(env["gpu"]) or (0, {}))[1] if dev.type == "cuda" else {}
    env["peak_tflops"] = peaks or None  # data sheet; fp32 rows run without TF32, so their MFU is against fp32
    inputs = {}
    for s in sizes:
        base = parity_batch(spec, photos, s)
        for b in batches:
            reps = -(-b // base[0].shape[0])
            inputs[b, s] = tuple(t.repeat(reps, *[1] * (t.dim() - 1))[:b].to(dev) for t in base)
    rows, eager_ms = [], {}
    memory = PeakMemory(dev)
    env["peak_memory"] = ("peak of torch's allocator during the row (memory that ONNX Runtime or TensorRT "
                          "allocate themselves is not counted)" if dev.type == "cuda" else
                          "process peak RSS during the row" if memory.per_row else "process peak RSS since start")
    workdir = Path(tempfile.mkdtemp(prefix="gantk-bench-"))
    with no_tf32(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.net.to(dev).eval()
        refs = {k: spec.net(*v).float() for k, v in inputs.items()}
        gflops = {s: flops_per_image(spec.net, inputs[batches[0], s]) / 1e9 for s in sizes}
        for name in backends:
            try:
                prep = prepare(name, spec, dev, workdir, max(batches), max(sizes))
            except Unavailable as e:
                log(f"{name:<22} unavailable: {e}")
                rows.append({"backend": name, "status": "unavailable", "reason": str(e)})
                continue
            first = True
            for (b, s), xs in inputs.items():
                row = {"backend": name, "batch": b, "size": s, "precision": prep.precision, "status": "ok"}
                try:
                    memory.restart()
                    t = time.perf_counter()
                    out = prep.run(*xs)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    first_s = time.perf_counter() - t
                    per_call = first_s
                    if budget_s and first_s > budget_s / 2:  # the first call may include compilation: time one more
                        t = time.perf_counter()
                        prep.run(*xs)
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        per_call = time.perf_counter() - t
                    fit = int(budget_s / max(per_call, 1e-9)) if budget_s else repeats  # calls the budget allows
                    n_warm, n_runs = min(warmup, fit), max(1, min(repeats, fit))
                    ts = np.array(timings(lambda: prep.run(*xs), dev, n_warm, n_runs)) * 1000
                except Exception as e:  # a backend that breaks is a result too
                    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                    log(f"{name:<22} b{b} {s}px error: {msg}")
                    rows.append({**row, "status": "error", "reason": msg})
                    continue
                med = float(np.median(ts))
                err = errors(refs[b, s].cpu().numpy(), out.float().cpu().numpy())
                if name == "eager":
                    eager_ms[b, s] = med
                row.update(runs=n_runs, median_ms=med, p10_ms=float(np.percentile(ts, 10)), p90_ms=float(np.percentile(ts, 90)),
                           images_per_s=b / med * 1000, first_call_s=first_s,
                           build_s=prep.build_s if first else 0.0,
                           peak_mem_mb=memory.mb(),
                           gflops_per_image=gflops[s], tflops=gflops[s] * b / med,
                           mfu=gflops[s] * b / med / peaks[prep.precision] if prep.precision in peaks else None,
                           speedup=(eager_ms[b, s] / med) if (b, s) in eager_ms else None,
                           **err, parity="PASS" if passes(err, prep.precision) else "FAIL")
                first = False
                rows.append(row)
                log(f"{name:<22} b{b:<3} {s:>4}px {med:9.2f} ms  {row['images_per_s']:8.2f} img/s  "
                    f"x{row['speedup'] or 0:5.2f}  PSNR {err['psnr']:6.1f}  {row['parity']}")
    return {"environment": env, "model": spec.metadata(),
            "config": {"backends": backends, "batches": batches, "sizes": sizes, "warmup": warmup,
                       "repeats": repeats, "budget_s": budget_s}, "results": rows}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{os.cpu_count()} logical CPUs"


def markdown(doc: dict) -> str:
    env, cfg = doc["environment"], doc["config"]
    v = ", ".join(f"{k} {x}" for k, x in env["versions"].items())
    arch = doc["model"].get("gantk_arch", {})
    lines = [f"# gantk bench: {arch.get('netG', doc['model'].get('gantk_family'))} (ngf {arch.get('ngf', '?')})",
             "", f"- date: {env['date']}", f"- device: {env['device']}; GPU: {env['gpu'] or 'none'}; CPU: {env['cpu']}",
             f"- threads: {env['threads']}; python {env['python']}; {v}",
             *([f"- command: `{cfg['command']}`"] if cfg.get("command") else []),
             f"- warm-up {cfg['warmup']}, timed runs {cfg['repeats']} (fewer where a call exceeds the "
             f"{cfg.get('budget_s') or '-'} s budget: see runs; median, p10-p90); speed-up vs eager fp32 at "
             "the same batch/size; parity vs eager fp32 on real photos (fp32: max err <= 1e-4; fp16: PSNR >= 40 dB; "
             "bf16: PSNR >= 32 dB)",
             *([f"- MFU: achieved TFLOP/s over the data-sheet dense peak for the row's precision ("
                + ", ".join(f"{k} {v}" for k, v in env["peak_tflops"].items()) + " TFLOP/s)"]
               if env.get("peak_tflops") else []),
             *([f"- peak MB: {env['peak_memory']}"] if env.get("peak_memory") else []), "",
             "| backend | batch | size | runs | median ms | p10-p90 ms | img/s | speed-up | first call s | build s | "
             "peak MB | TFLOP/s | MFU | max err | PSNR dB | parity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | | | | {r['status']}: {r['reason']} | | | | | | | | | | | |")
            continue
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        lines.append(f"| {r['backend']} | {r['batch']} | {r['size']} | {r['runs']} | {r['median_ms']:.2f} | "
                     f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f} | {r['images_per_s']:.2f} | {sp} | {r['first_call_s']:.2f} | "
                     f"{r['build_s']:.1f} | {r['peak_mem_mb']:.0f} | {r['tflops']:.3f} | "
                     f"{format(r['mfu'], '.1%') if r.get('mfu') is not None else '-'} | {r['max_abs']:.2g} | "
                     f"{r['psnr']:.1f} | {r['parity']} |")
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> Path | None:
    """Latency vs batch per backend (one panel per image size), as PNG; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    sizes = sorted({r["size"] for r in ok})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, s in zip(axes[0], sizes):
        for name in dict.fromkeys(r["backend"] for r in ok):
            pts = sorted((r["batch"], r["median_ms"], r["parity"]) for r in ok if r["backend"] == name and r["size"] == s)
            label = name + (" (parity FAIL)" if any(p[2] == "FAIL" for p in pts) else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set(title=f"{s}x{s}, {doc['environment']['device']}", xlabel="batch", ylabel="median latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(doc: dict, out: str | Path) -> list[Path]:
    """<out>.json, <out>.md and <out>.png (plot)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".json"), out.with_suffix(".md")]
    paths[0].write_text(json.dumps(doc, indent=1))
    paths[1].write_text(markdown(doc))
    png = plot(doc, out.with_suffix(".png"))
    return paths + ([png] if png else [])
