"""`gantk bench`: latency, throughput, memory and parity of one generator on every backend.

Each backend turns the generator into a callable (eager variants, torch.compile, Triton kernels, or an
exported artifact run through gantk.export's runners). All run the same real photos; every output is
compared with eager fp32 and graded against the precision's threshold (gantk.export.parity), so a fast
but wrong backend is reported as FAIL next to its speed. Given LPIPS weights each row also records the LPIPS of
its output against eager's, and given --eval_images each backend its FID change (gantk.export.parity.Quality).
Backends that cannot run here stay in the table with the reason."""
from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import re
import resource
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gantk.acceleration import accelerate, parse_options
from gantk.errors import GantkError
from gantk.runtime import environment

# Default backends per device: eager, options of the PyTorch model ('+'-joined, gantk.acceleration), and the
# runtimes of exported artifacts (gantk.export.backends.RUNTIMES)
BACKENDS = ("eager", "amp", "amp-bf16", "channels_last", "compile", "compile-max-autotune", "triton",
            "amp+compile+triton", "amp-bf16+compile+triton", "winograd", "aoti", "ort-cpu", "ort-cuda", "ort-trt",
            "openvino-cpu", "trt-fp32", "trt-fp16")
CPU_DEFAULT = ("eager", "amp", "channels_last", "compile", "triton", "winograd", "aoti", "ort-cpu", "openvino-cpu", "trt-fp32")
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


def check_backend(name: str) -> None:
    """GantkError for a name that is neither an exported runtime nor eager/'+'-joined model options."""
    from gantk.export.backends import RUNTIMES
    if name not in RUNTIMES:
        try:
            parse_options(name)
        except GantkError as e:
            raise GantkError(f"--backends {e}, or one of {', '.join(RUNTIMES)}") from None


def check_modes(interleave: bool, isolate: bool) -> None:
    if interleave and isolate:
        raise GantkError("--interleave and --isolate: choose one (interleaving holds every backend in one process)")


def gpu_peaks(name: str) -> tuple[float, dict[str, float]] | None:
    """(HBM TB/s, {precision: dense TFLOP/s}) from the data sheet of GPU `name`; None when not in the table."""
    return next(((tbps, flops) for pattern, tbps, flops in GPU_PEAKS if re.search(pattern, name, re.I)), None)


def make_runner(name: str, spec, device: torch.device, workdir: Path, max_batch: int, max_size: int):
    """(runner, precision, build seconds) of backend `name`; a string saying why it cannot run here instead."""
    from gantk.export.backends import ARTIFACTS, RUNTIMES, Builder
    from gantk.export.runners import TorchRunner
    t0 = time.perf_counter()
    if name in RUNTIMES:
        runtime = RUNTIMES[name]
        reason = runtime.unavailable(device)
        if reason:
            return reason
        builder = Builder(spec, workdir, "model", max_batch=max(max_batch, 2), opt_size=max_size,
                          max_size=max_size, device=str(device))
        runner = runtime.open(builder.build(runtime.artifact), device, torch.get_num_threads())
        return runner, ARTIFACTS[runtime.artifact].precision, time.perf_counter() - t0
    try:
        fn, precision = accelerate(spec.net.to(device).eval(), parse_options(name), device)
    except GantkError as e:
        return str(e)
    return TorchRunner(fn, name, spec.metadata()), precision, 0.0


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call(runner, xs, device: torch.device, warmup: int, repeats: int, budget_s: float):
    """(output, first-call s, warm-up calls, timed runs): with `budget_s`, as many runs as the budget allows."""
    t = time.perf_counter()
    out = runner.run_torch(*xs)
    sync(device)
    first_s = per_call = time.perf_counter() - t
    if budget_s and first_s > budget_s / 2:  # the first call may include compilation: time one more
        t = time.perf_counter()
        runner.run_torch(*xs)
        sync(device)
        per_call = time.perf_counter() - t
    fit = int(budget_s / max(per_call, 1e-9)) if budget_s else repeats  # calls the budget allows
    return out, first_s, min(warmup, fit), max(1, min(repeats, fit))


def measure(runner, xs, device: torch.device, memory: PeakMemory, warmup: int, repeats: int, budget_s: float):
    """(output, first-call s, timed seconds, peak MB) of one row; the peak covers its first call, warm-ups and
    timed runs."""
    memory.restart()
    out, first_s, n_warm, n_runs = first_call(runner, xs, device, warmup, repeats, budget_s)
    ts = timings(lambda: runner.run_torch(*xs), device, n_warm, n_runs)
    return out, first_s, ts, memory.mb()


@contextlib.contextmanager
def measuring():
    """What every measurement runs under: no TF32, no autograd, warnings silenced; yields a temporary folder
    for exported artifacts, removed at the end."""
    from gantk.export.parity import no_tf32
    with (no_tf32(), torch.no_grad(), warnings.catch_warnings(),
          tempfile.TemporaryDirectory(prefix="gantk-bench-") as tmp):
        warnings.simplefilter("ignore")
        yield Path(tmp)


def fresh_process_row(spec, name: str, device: str, xs, max_batch: int, max_size: int, threads: int,
                      warmup: int, repeats: int, budget_s: float):
    """One row measured in this (fresh) process: (precision, build s, `measure`'s tuple), or why the backend
    cannot run here. Run by --isolate in a spawned process, so that no other row's heap, malloc setting or
    runtime shares its process."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    with measuring() as workdir:
        made = make_runner(name, spec, dev, workdir, max_batch, max_size)
        if isinstance(made, str):
            return made
        runner, precision, build_s = made
        return precision, build_s, measure(runner, xs, dev, PeakMemory(dev), warmup, repeats, budget_s)


def in_fresh_process(*args):
    """`fresh_process_row(*args)` in a newly spawned Python process (its exceptions are raised here)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fresh_process_row, *args).result()


def flops_per_image(net, inputs) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(*[t[:1] for t in inputs])
    return float(counter.get_total_flops())


def run_bench(spec, backends: list[str], batches: list[int], sizes: list[int], photos, device: str = "cpu",
              warmup: int = 2, repeats: int = 10, threads: int = 0, budget_s: float = 0.0, log=print,
              quality=None, interleave: bool = False, isolate: bool = False) -> dict:
    """Measure every backend at every (batch, size); returns the results document. With `budget_s`, a
    backend whose first call is slow gets fewer warm-up and timed runs (at least one timed run; the first
    call then counts as the warm-up; `runs` says how many were timed). `quality` (gantk.export.parity.Quality)
    adds LPIPS per row and the FID change per backend (doc["quality"]["fid_change"]). `interleave`: every
    backend is built first, and per (batch, size) each timed round calls every backend once, so a host whose
    speed drifts slows all of them alike; the speed-up is then the median of the rounds' paired ratios (the
    process settings a backend makes, such as winograd's malloc, then apply to eager's calls too). `isolate`:
    every row runs in a freshly spawned process (its backend built there), so its peak memory is what a process
    running that one configuration holds, and no backend's process settings reach another's rows."""
    from gantk.export.parity import Comparator
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GantkError("--device cuda: no CUDA GPU here")
    check_modes(interleave, isolate)
    if threads:
        torch.set_num_threads(threads)
    for s in sizes:
        if s % spec.multiple:
            raise GantkError(f"--sizes {s}: must be a multiple of {spec.multiple} for this generator")
    for name in backends:
        check_backend(name)  # an ill-formed name fails before anything runs
    # eager first, in the process as it started: it is the reference, and speed options change the process
    # (winograd makes glibc's malloc keep freed memory, which makes a later eager faster than the reference's)
    backends = sorted(backends, key=lambda name: name != "eager")
    env = {**environment(), "threads": torch.get_num_threads(), "device": str(dev)}
    peaks = (gpu_peaks(env["gpu"]) or (0, {}))[1] if dev.type == "cuda" else {}
    env["peak_tflops"] = peaks or None  # data sheet; fp32 rows run without TF32, so their MFU is against fp32
    compare = Comparator(spec, photos, dev, quality)
    fid_change = {}
    shapes = [(b, s) for s in sizes for b in batches]
    rows, eager_ms = [], {}
    memory = PeakMemory(dev)
    env["peak_memory"] = (
        "not measured: interleaved, every backend's runtime is held at once (run without --interleave)"
        if interleave else "peak of torch's allocator during the row (memory that ONNX Runtime or TensorRT "
        "allocate themselves is not counted)" if dev.type == "cuda" else
        "peak RSS of a fresh process per row (Python, torch, the weights and the built backend, then the row)"
        if isolate else "process peak RSS during the row" if memory.per_row else "process peak RSS since start")

    def failed(row, e):  # a backend that breaks is a result too
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        log(f"{row['backend']:<22} b{row['batch']} {row['size']}px error: {msg}")
        rows.append({**row, "status": "error", "reason": msg})

    def finish(row, ts, out, first_s, build_s, peak_mb, outputs, ratios=None):
        name, b, s = row["backend"], row["batch"], row["size"]
        ts = np.array(ts) * 1000
        med = float(np.median(ts))
        grade = compare.grade(out, b, s, row["precision"])
        if compare.quality.inception is not None:  # kept only for the FID change
            outputs[b, s] = out
        if name == "eager":
            eager_ms[b, s] = med
        speedup = (float(np.median(ratios)) if ratios else eager_ms[b, s] / med) if (b, s) in eager_ms else None
        row.update(runs=len(ts), times_ms=[float(t) for t in ts], median_ms=med, p10_ms=float(np.percentile(ts, 10)),
                   p90_ms=float(np.percentile(ts, 90)), images_per_s=b / med * 1000, first_call_s=first_s,
                   build_s=build_s, peak_mem_mb=peak_mb, gflops_per_image=gflops[s], tflops=gflops[s] * b / med,
                   mfu=gflops[s] * b / med / peaks[row["precision"]] if row["precision"] in peaks else None,
                   speedup=speedup, max_abs=grade["max_abs"], mean_abs=grade["mean_abs"], psnr=grade["psnr"],
                   **{k: grade[k] for k in ("lpips",) if k in grade}, parity="PASS" if grade["pass"] else "FAIL")
        rows.append(row)
        log(f"{name:<22} b{b:<3} {s:>4}px {med:9.2f} ms  {row['images_per_s']:8.2f} img/s  "
            f"x{row['speedup'] or 0:5.2f}  PSNR {grade['psnr']:6.1f}  "
            + (f"LPIPS {grade['lpips']:.2g}  " if "lpips" in grade else "") + row["parity"])

    def fid(name, outputs):
        change = compare.fid_change(outputs) if outputs else None
        if change:
            fid_change[name] = change
            log(f"{name:<22} FID change {change['change']:+.4f} (vs eager over {change['images']} outputs)")

    def unavailable(name, reason):
        log(f"{name:<22} unavailable: {reason}")
        rows.append({"backend": name, "status": "unavailable", "reason": reason})

    def runner_for(name):
        made = make_runner(name, spec, dev, workdir, max(batches), max(sizes))
        return unavailable(name, made) if isinstance(made, str) else made

    with measuring() as workdir:
        spec.net.to(dev).eval()
        gflops = {s: flops_per_image(spec.net, compare.inputs(batches[0], s)) / 1e9 for s in sizes}
        if not interleave:
            for name in backends:
                made = None if isolate else runner_for(name)
                if made is None and not isolate:
                    continue
                outputs, build_s = {}, made[2] if made else 0.0
                for b, s in shapes:
                    xs = compare.inputs(b, s)
                    row = {"backend": name, "batch": b, "size": s, "precision": made and made[1], "status": "ok"}
                    try:
                        if isolate:
                            got = in_fresh_process(spec, name, device, xs, max(batches), max(sizes),
                                                   torch.get_num_threads(), warmup, repeats, budget_s)
                            if isinstance(got, str):
                                unavailable(name, got)
                                break
                            row["precision"], build_s, measured = got
                        else:
                            measured = measure(made[0], xs, dev, memory, warmup, repeats, budget_s)
                    except Exception as e:
                        failed(row, e)
                        continue
                    out, first_s, ts, peak_mb = measured
                    finish(row, ts, out, first_s, build_s, peak_mb, outputs)
                    build_s = 0.0
                fid(name, outputs)
        else:  # every runner first; then per shape, each timed round calls every backend once
            made = {name: m for name in backends if (m := runner_for(name)) is not None}
            outputs = {name: {} for name in made}
            build = {name: m[2] for name, m in made.items()}  # counted in each backend's first row
            for b, s in shapes:
                xs = compare.inputs(b, s)
                live = {}  # name -> [row, out, first_s, runs, seconds per call]
                for name, (runner, precision, _) in made.items():
                    row = {"backend": name, "batch": b, "size": s, "precision": precision, "status": "ok"}
                    try:
                        out, first_s, n_warm, n_runs = first_call(runner, xs, dev, warmup, repeats, budget_s)
                        timings(lambda: runner.run_torch(*xs), dev, n_warm, 0)
                    except Exception as e:
                        failed(row, e)
                        continue
                    live[name] = [row, out, first_s, n_runs, []]
                for i in range(max((v[3] for v in live.values()), default=0)):
                    for name, v in list(live.items()):
                        if i < v[3]:
                            try:
                                v[4] += timings(lambda: made[name][0].run_torch(*xs), dev, 0, 1)
                            except Exception as e:
                                failed(v[0], e)
                                del live[name]
                eager_ts = live["eager"][4] if "eager" in live else []
                for name, (row, out, first_s, _, ts) in live.items():
                    ratios = [e / t for e, t in zip(eager_ts, ts)]
                    finish(row, ts, out, first_s, build.pop(name, 0.0), None, outputs[name], ratios)
            for name, outs in outputs.items():
                fid(name, outs)
    return {"environment": env, "model": spec.metadata(),
            "config": {"backends": backends, "batches": batches, "sizes": sizes, "warmup": warmup,
                       "repeats": repeats, "budget_s": budget_s, "interleave": interleave,
                       "isolate": isolate}, "results": rows,
            "quality": {**compare.quality.record, **({"fid_change": fid_change} if fid_change else {})}}


def markdown(doc: dict) -> str:
    env, cfg = doc["environment"], doc["config"]
    lp = any("lpips" in r for r in doc["results"])
    v = ", ".join(f"{k} {x}" for k, x in env["versions"].items())
    arch = doc["model"].get("gantk_arch", {})
    lines = [f"# gantk bench: {arch.get('netG', doc['model'].get('gantk_family'))} (ngf {arch.get('ngf', '?')})",
             "", f"- date: {env['date']}", f"- device: {env['device']}; GPU: {env['gpu'] or 'none'}; CPU: {env['cpu']}",
             f"- threads: {env['threads']}; python {env['python']}; {v}",
             *([f"- command: `{cfg['command']}`"] if cfg.get("command") else []),
             f"- warm-up {cfg['warmup']}, timed runs {cfg['repeats']} (fewer where a call exceeds the "
             f"{cfg.get('budget_s') or '-'} s budget: see runs; median, p10-p90); speed-up vs eager fp32 at "
             "the same batch/size" + ("; interleaved: per batch/size each timed round calls every backend once, and "
                                      "the speed-up is the median of the rounds' paired ratios" if cfg.get("interleave")
                                      else "") + "; parity vs eager fp32 on real photos (fp32: max err <= 1e-4; fp16: PSNR >= 40 dB; "
             "bf16: PSNR >= 32 dB)",
             *(["- MFU: achieved TFLOP/s over the data-sheet dense peak for the row's precision ("
                + ", ".join(f"{k} {v}" for k, v in env["peak_tflops"].items()) + " TFLOP/s)"]
               if env.get("peak_tflops") else []),
             *([f"- peak MB: {env['peak_memory']}"] if env.get("peak_memory") else []),
             *quality_notes(doc.get("quality", {})), "",
             "| backend | batch | size | runs | median ms | p10-p90 ms | img/s | speed-up | first call s | build s | "
             "peak MB | TFLOP/s | MFU | max err | PSNR dB | " + ("LPIPS | " if lp else "") + "parity |",
             "|---" * (17 if lp else 16) + "|"]
    for r in doc["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | | | | {r['status']}: {r['reason']} |" + " |" * (12 if lp else 11))
            continue
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        lines.append(f"| {r['backend']} | {r['batch']} | {r['size']} | {r['runs']} | {r['median_ms']:.2f} | "
                     f"{r['p10_ms']:.2f}-{r['p90_ms']:.2f} | {r['images_per_s']:.2f} | {sp} | {r['first_call_s']:.2f} | "
                     f"{r['build_s']:.1f} | {format(r['peak_mem_mb'], '.0f') if r['peak_mem_mb'] else '-'} | "
                     f"{r['tflops']:.3f} | "
                     f"{format(r['mfu'], '.1%') if r.get('mfu') is not None else '-'} | {r['max_abs']:.2g} | "
                     f"{r['psnr']:.1f} | " + (f"{r['lpips']:.2g} | " if "lpips" in r else "- | " if lp else "")
                     + f"{r['parity']} |")
    return "\n".join(lines) + "\n"


def quality_notes(quality: dict) -> list[str]:
    """Markdown lines on LPIPS (what was used, or why it is missing) and each backend's FID change."""
    lp = quality.get("lpips")
    lines = [f"- LPIPS: v0.1 {lp['net']} of each output vs eager's ({lp['protocol']})" if isinstance(lp, dict)
             else f"- {lp}"] if lp else []
    for name, f in quality.get("fid_change", {}).items():
        lines.append(f"- FID change of {name}: {f['change']:+.4f} (FID {f['artifact']:.4f} vs eager {f['eager']:.4f}; "
                     f"{f['images']} outputs vs {f['reference_images']} images of {quality['fid']['reference']})")
    return lines


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
