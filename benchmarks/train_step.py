"""Seconds per CycleGAN training iteration under the speed options (AMP, channels_last, torch.compile,
--kernels winograd on CPU, --kernels triton on CUDA).

Each configuration runs in its own child process (a fresh interpreter, so no compiled code, caches
or memory carry over) with a fresh model built from the same seed, and runs the full reference recipe
(G_A/G_B step with GAN + cycle + identity losses, then D_A/D_B on image-pool fakes) on real photos.
The first iteration (which includes torch.compile's compilation, from an empty inductor cache unless
--warm-cache) is reported on its own; then come warm-up iterations, then the timed ones (median, p10,
p90, speed-up over eager fp32). A config that raises (or whose process dies) is marked FAILED; one
with an iteration longer than --iter-timeout is killed and marked TIMEOUT; the run goes on either way.

With --parts N, N more iterations per config run under torch.profiler and the one of median length is
split by kind of op (self time on the calling thread, where CPU autograd also runs): the GEMMs (bmm, mm,
addmm), torch's convolutions (oneDNN, forward and backward) and the rest (gantk's C tile transforms and
norms, copies, the optimizer, Python). Eager's median over the GEMMs + convolutions' share of a config's
median is the most that config's design can reach with everything else free: the bound on the speed-up goal
(shares, because this host's speed drifts by a third between iterations).

Timings on a shared machine are only as good as its idleness: the CPU time other processes used
during the timed iterations is recorded per config ("other load", in cores); --wait-idle waits for
a quiet machine before each config.

    python benchmarks/train_step.py                         # all configs, 256 px, batch 1, CPU
    python benchmarks/train_step.py --configs eager amp+channels_last --iters 10
    python benchmarks/train_step.py --device cuda --batch-size 4

Writes benchmarks/results/train_step_<device>.json and .md (rewritten after every config, so a run
that is stopped early still leaves the configs it finished).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import queue
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from gantk import runtime
from gantk.acceleration import KERNELS as KERNEL_CHOICES
from gantk.models.cyclegan import CycleGANConfig, CycleGANModel
from gantk.nn.generators import NETG_NAMES, size_multiple

# --- the configurations: every combination of the speed options -----------------------------

KERNELS = KERNEL_CHOICES[1:]  # options that set TrainConfig.kernels (at most one of them)
OPTIONS = ("amp", "channels_last", "compile", *KERNELS)
BASELINE = "eager"  # eager fp32, contiguous (NCHW): what speed-ups are measured against


def config_name(flags: dict[str, bool]) -> str:
    """'eager' for no option, else the enabled options joined by '+', e.g. 'amp+compile'."""
    on = [o for o in OPTIONS if flags[o]]
    return "+".join(on) if on else BASELINE


CONFIGS: dict[str, dict[str, bool]] = {}
for _n in range(len(OPTIONS) + 1):
    for _combo in itertools.combinations(OPTIONS, _n):
        _flags = {o: o in _combo for o in OPTIONS}
        if sum(_flags[k] for k in KERNELS) <= 1:
            CONFIGS[config_name(_flags)] = _flags


def default_configs(device: str) -> list[str]:
    """Every config whose kernels suit `device`: winograd on CPU, the Triton kernels on CUDA."""
    other = "triton" if device == "cpu" else "winograd"
    return [name for name, flags in CONFIGS.items() if not flags[other]]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS), metavar="CONFIG",
                   help=f"configurations to run, from: {', '.join(CONFIGS)} "
                        f"('{BASELINE}' is always added, as the baseline for speed-ups; default: every config "
                        "without triton on CPU, without winograd on CUDA)")
    p.add_argument("--size", type=int, default=256, help="image height and width (crop_size)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--netG", default="resnet_9blocks", choices=NETG_NAMES)
    p.add_argument("--ngf", type=int, default=64, help="generator filters in the last conv layer")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations after the first one")
    p.add_argument("--iters", type=int, default=5, help="timed iterations")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed for every model's weights")
    p.add_argument("--goal", type=float, default=2.0, help="speed-up over eager fp32 that the best config should reach")
    p.add_argument("--iter-timeout", type=int, default=900,
                   help="stop a config whose iteration (the first, with compilation, included) takes longer "
                        "than this many seconds, and mark it TIMEOUT (0: no limit)")
    p.add_argument("--warm-cache", action="store_true",
                   help="let torch.compile reuse the default inductor cache (default: an empty one per config, "
                        "so the first iteration shows a cold compile)")
    p.add_argument("--wait-idle", type=int, default=0,
                   help="before each config, wait up to this many seconds for other processes to use < 0.2 cores")
    p.add_argument("--parts", type=int, default=0, metavar="N",
                   help="profile N more iterations per config and report the one of median length: its GEMMs, "
                        "convolutions and the rest, and the speed-up bound they set (0: none)")
    p.add_argument("--out", default="benchmarks/results", help="folder for train_step_<device>.json/.md")
    args = p.parse_args(argv)
    args.configs = [BASELINE] + [c for c in dict.fromkeys(args.configs or default_configs(args.device)) if c != BASELINE]
    if args.size % size_multiple(args.netG):
        p.error(f"--size must be a multiple of {size_multiple(args.netG)} for --netG {args.netG}")
    if args.iters < 1 or args.warmup < 0 or args.parts < 0:
        p.error("--iters must be >= 1, --warmup and --parts >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    return args


# --- inputs: real photos ---------------------------------------------------------------------------

PHOTOS_A = ("astronaut", "chelsea")  # domain A
PHOTOS_B = ("coffee", "rocket")      # domain B


def to_tensor(img, size: int) -> torch.Tensor:
    """HxWx3 uint8 -> (3, size, size) in [-1, 1]: centre square crop, then antialiased resize."""
    t = torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1.0)
    h, w = t.shape[1:]
    s = min(h, w)
    t = t[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(t[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def load_photos(size: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    """Domain A and B images from scikit-image's sample photos (plus mirrored copies);
    random images in [-1, 1] if scikit-image is missing. Returns (A, B, description)."""
    try:
        import skimage.data
    except ImportError:
        g = torch.Generator().manual_seed(seed)
        rand = [torch.rand(3, size, size, generator=g) * 2 - 1 for _ in range(4)]
        return rand[:2], rand[2:], "RANDOM NOISE (scikit-image is not installed)"
    a = [to_tensor(getattr(skimage.data, n)(), size) for n in PHOTOS_A]
    b = [to_tensor(getattr(skimage.data, n)(), size) for n in PHOTOS_B]
    a += [t.flip(-1) for t in a]
    b += [t.flip(-1) for t in b]
    return a, b, f"scikit-image photos A={'/'.join(PHOTOS_A)}, B={'/'.join(PHOTOS_B)} (+ mirrored)"


def batches(a: list[torch.Tensor], b: list[torch.Tensor], batch_size: int):
    """Endless {'A', 'B'} batches cycling through the photos."""
    for k in itertools.count():
        idx = [(k * batch_size + j) for j in range(batch_size)]
        yield {"A": torch.stack([a[i % len(a)] for i in idx]), "B": torch.stack([b[i % len(b)] for i in idx])}


# --- measuring on a shared machine ----------------------------------------------------------------

def cpu_busy_s() -> float | None:
    """CPU seconds all processes have used since boot, from /proc/stat (None where it is missing)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


class LoadMeter:
    """Cores' worth of CPU that other processes used between start() and stop()."""

    def start(self) -> None:
        self.busy, self.own, self.wall = cpu_busy_s(), time.process_time(), time.perf_counter()

    def stop(self) -> float | None:
        if self.busy is None:
            return None
        busy, own, wall = cpu_busy_s() - self.busy, time.process_time() - self.own, time.perf_counter() - self.wall
        return max(0.0, busy - own) / wall if wall > 0 else None


def wait_idle(max_s: int, threshold: float = 0.2, window_s: float = 3.0) -> float | None:
    """Wait (up to max_s) until other processes use less than `threshold` cores; return the last reading."""
    meter, t0, load = LoadMeter(), time.monotonic(), None
    while time.monotonic() - t0 < max_s:
        meter.start()
        time.sleep(window_s)
        load = meter.stop()
        if load is None or load < threshold:
            break
        if time.monotonic() - t0 < 2 * window_s:
            print(f"  waiting up to {max_s} s for an idle machine (other processes use {load:.1f} cores)", flush=True)
    waited = time.monotonic() - t0
    if waited >= 2 * window_s:
        print(f"  waited {waited:.0f} s; other processes now use {fmt(load, '.1f')} cores", flush=True)
    return load


# --- one configuration -----------------------------------------------------------------------------

def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100]), as numpy's default."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_config(name: str, args, cache_root: str) -> dict:
    """Run one config in a child process and collect what it reports; never raises.
    The child reports after every iteration, so the parent can kill it when one takes too long."""
    res: dict = {"config": name, **CONFIGS[name], "status": "ok"}
    if args.wait_idle:
        res["other_load_before"] = wait_idle(args.wait_idle)
    ctx = multiprocessing.get_context("spawn")
    reports = ctx.Queue()
    child = ctx.Process(target=measure, args=(name, args, cache_root, reports), daemon=True)
    child.start()
    last = None  # when the last iteration ended (None while the model is being built)
    while True:
        try:
            key, value = reports.get(timeout=1.0)
        except queue.Empty:
            if not child.is_alive():
                res["status"], res["error"] = "FAILED", f"the benchmark process died (exit code {child.exitcode})"
                break
            if last is not None and args.iter_timeout and time.monotonic() - last > args.iter_timeout:
                res["status"], res["error"] = "TIMEOUT", f"an iteration ran past {args.iter_timeout} s (--iter-timeout)"
                break
            continue
        if key == "done":
            break
        if key == "error":
            res["status"], (res["error"], res["traceback"]) = "FAILED", value
            break
        last = time.monotonic()
        if key in ("warmup_s", "times_s"):
            res.setdefault(key, []).append(value)
        elif key != "ready":
            res[key] = value
    if res["status"] == "TIMEOUT":
        child.kill()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        child.join()
    if res["status"] != "ok":
        print(f"  {res['status']}: {res['error'][:2000]}", flush=True)
        return res
    times = res["times_s"]
    res["median_s"] = statistics.median(times)
    res["p10_s"] = percentile(times, 10)
    res["p90_s"] = percentile(times, 90)
    return res


def measure(name: str, args, cache_root: str, reports) -> None:
    """In the child: fresh model (same seed), first iteration, warm-up, timed iterations, loss check;
    every result goes to `reports` as (key, value) as soon as it is known."""
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        if not args.warm_cache:  # a cold inductor cache for every config
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, name)
        device = torch.device(args.device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        a, b, _ = load_photos(args.size, args.seed)
        data = batches(a, b, args.batch_size)  # the same input sequence for every config

        cfg = CycleGANConfig(netG=args.netG, ngf=args.ngf, crop_size=args.size, batch_size=args.batch_size,
                             pool_size=50, seed=args.seed, device=args.device,
                             kernels=next((k for k in KERNELS if CONFIGS[name][k]), "none"),
                             **{o: on for o, on in CONFIGS[name].items() if o not in KERNELS})
        torch.manual_seed(args.seed)
        model = CycleGANModel(cfg, device=device)
        model.setup()
        model.train()

        def step() -> float:
            batch = next(data)
            sync()
            t0 = time.perf_counter()
            model.set_input(batch)
            model.optimize_parameters()
            sync()
            return time.perf_counter() - t0

        reports.put(("ready", None))
        t = step()
        reports.put(("first_iter_s", t))
        print(f"  first iteration {t:.2f} s", flush=True)
        for i in range(args.warmup):
            t = step()
            reports.put(("warmup_s", t))
            print(f"  warm-up {i + 1}/{args.warmup}: {t:.2f} s", flush=True)

        meter = LoadMeter()
        meter.start()
        for i in range(args.iters):
            t = step()
            reports.put(("times_s", t))
            print(f"  iter {i + 1}/{args.iters}: {t:.3f} s", flush=True)
        other_load = meter.stop()
        reports.put(("other_load", other_load))
        if args.parts:
            profiled = sorted((step_parts(step) for _ in range(args.parts)), key=lambda p: p["total"])
            reports.put(("parts_s", profiled[len(profiled) // 2]))

        losses = model.current_losses()
        finite = all(math.isfinite(v) for v in losses.values())
        reports.put(("losses", losses))
        reports.put(("losses_finite", finite))
        if not finite:
            print(f"  NON-FINITE losses: {losses}", flush=True)
        if other_load is not None and other_load > 0.2:
            print(f"  note: other processes used {other_load:.1f} cores during the timed iterations", flush=True)
        reports.put(("done", None))
    except Exception as e:  # a failing config is a result, not a crash
        reports.put(("error", (f"{type(e).__name__}: {e}", traceback.format_exc())))


GEMM_OPS = ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm", "aten::addbmm")


def op_kind(name: str) -> str:
    """'GEMMs', 'convolutions' (torch's, forward or backward) or 'rest' for a profiled op's name."""
    if name in GEMM_OPS:
        return "GEMMs"
    if name.startswith("aten::") and any(w in name for w in ("convolution", "conv2d", "conv_transpose")):
        return "convolutions"
    return "rest"


def step_parts(step) -> dict[str, float]:
    """Seconds of one profiled call of `step` by kind of op (self time on this thread, `op_kind`), with
    'rest' the wall time outside GEMMs and convolutions, 'total' the wall time, and 'gemm_gflops_per_s' the
    GEMMs' rate (the profiler's FLOP count)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t = time.perf_counter()
        step()
        total = time.perf_counter() - t
    parts, flop = {"GEMMs": 0.0, "convolutions": 0.0}, 0
    for e in prof.key_averages():
        if (kind := op_kind(e.key)) != "rest":
            parts[kind] += e.self_cpu_time_total / 1e6
        if kind == "GEMMs":
            flop += e.flops
    return {**parts, "rest": total - sum(parts.values()), "total": total,
            "gemm_gflops_per_s": flop / parts["GEMMs"] / 1e9 if parts["GEMMs"] else None}


def summarise(results: list[dict], goal: float) -> dict:
    """Speed-ups over eager fp32 and the best config (fastest median with finite losses)."""
    base = next((r for r in results if r["config"] == BASELINE and r["status"] == "ok"), None)
    for r in results:
        ok = r["status"] == "ok" and base is not None
        r["speedup"] = base["median_s"] / r["median_s"] if ok else None
        if ok and r.get("parts_s"):  # the profiled iteration's share of GEMMs + convolutions, of the median
            p = r["parts_s"]
            r["bound_speedup"] = base["median_s"] / (r["median_s"] * (p["GEMMs"] + p["convolutions"]) / p["total"])
    loads = [r["other_load"] for r in results if r.get("other_load") is not None]
    valid = [r for r in results if r["status"] == "ok" and r["losses_finite"]]
    best = min(valid, key=lambda r: r["median_s"]) if valid else None
    return {"best_config": best["config"] if best else None,
            "best_median_s": best["median_s"] if best else None,
            "best_speedup": best["speedup"] if best else None,
            "goal_speedup": goal,
            "goal_met": bool(best and best["speedup"] is not None and best["speedup"] >= goal),
            "max_other_load": max(loads) if loads else None}


# --- environment and output ------------------------------------------------------------------------

def environment(args) -> dict:
    """gantk's environment record (no host name) plus what matters for a training-step timing."""
    env = {**runtime.environment(),
           "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "torch_threads": torch.get_num_threads(),
           "mkldnn_bf16": runtime.cpu_has_bf16(),
           "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
           "os": f"{platform.system()} {platform.release()} {platform.machine()}",
           "cuda_version": torch.version.cuda if args.device == "cuda" else None}
    return env


def fmt(x, spec=".3f", none="-") -> str:
    return none if x is None else format(x, spec)


def markdown(report: dict) -> str:
    env, opts, summary = report["environment"], report["options"], report["summary"]
    lines = [f"# CycleGAN train step: seconds per iteration ({opts['device']})", "",
             f"{opts['netG']}, ngf {opts['ngf']}, {opts['size']} px, batch {opts['batch_size']}, "
             f"identity loss + image pool 50; first iteration separate, then {opts['warmup']} warm-up, "
             f"{opts['iters']} timed iterations. Inputs: {report['inputs']}.", "",
             "| config | status | first iter (s) | median (s) | p10 (s) | p90 (s) | speed-up vs eager fp32 "
             "| losses finite | other load (cores) |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in report["results"]:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error'].splitlines()[0][:120]}"
        finite = {True: "yes", False: "**NO**"}.get(r.get("losses_finite"), "-")
        speedup = fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else "")
        lines.append(f"| {r['config']} | {status} | {fmt(r.get('first_iter_s'), '.2f')} | {fmt(r.get('median_s'))} "
                     f"| {fmt(r.get('p10_s'))} | {fmt(r.get('p90_s'))} | {speedup} | {finite} "
                     f"| {fmt(r.get('other_load'), '.2f')} |")
    if summary["best_config"]:
        lines += ["", f"**Best:** `{summary['best_config']}`, {summary['best_median_s']:.3f} s/iter, "
                      f"{summary['best_speedup']:.2f}x eager fp32. "
                      f"Goal >= {summary['goal_speedup']:g}x eager fp32 met: **{'yes' if summary['goal_met'] else 'no'}**."]
    else:
        lines += ["", "**Best:** none (no config finished with finite losses)."]
    if summary.get("max_other_load") is not None and summary["max_other_load"] > 0.2:
        lines += ["", f"**Warning:** other processes used up to {summary['max_other_load']:.1f} cores during "
                      "timed iterations (column 'other load'); those timings are disturbed."]
    profiled = [r for r in report["results"] if r.get("parts_s")]
    if profiled:
        lines += ["", f"Where a profiled iteration spends its time (the median of {opts['parts']} more), s (self "
                      "time of the ops on the calling thread; 'rest': gantk's C tile transforms and norms, copies, "
                      "the optimizer, Python), and the most a config's design can reach: eager's median / (the "
                      "config's median x the GEMMs + convolutions' share), everything else free:",
                  "", "| config | profiled iteration | GEMMs (bmm, mm) | convolutions (torch's, fwd + bwd) | rest "
                      "| GEMM GFLOP/s | most reachable vs eager fp32 |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in profiled:
            p = r["parts_s"]
            shares = " | ".join(f"{p[k]:.3f} ({100 * p[k] / p['total']:.0f}%)"
                                for k in ("GEMMs", "convolutions", "rest"))
            bound = fmt(r.get("bound_speedup"), ".2f") + ("x" if r.get("bound_speedup") else "")
            lines.append(f"| {r['config']} | {p['total']:.3f} | {shares} | {fmt(p.get('gemm_gflops_per_s'), '.0f')} "
                         f"| {bound} |")
    partial = [r for r in report["results"] if r["status"] != "ok" and (r.get("first_iter_s") or r.get("times_s"))]
    for r in partial:
        lines += ["", f"`{r['config']}` ({r['status']}) got as far as: first iteration "
                      f"{fmt(r.get('first_iter_s'), '.2f')} s, warm-up {r.get('warmup_s', [])}, timed {r.get('times_s', [])}."]
    loss_names = sorted({k for r in report["results"] for k in r.get("losses", {})})
    if loss_names:
        lines += ["", "Losses after the timed iterations:", "",
                  "| config | " + " | ".join(loss_names) + " |", "|---|" + "---:|" * len(loss_names)]
        for r in report["results"]:
            if r.get("losses"):
                lines.append(f"| {r['config']} | " + " | ".join(fmt(r['losses'].get(k), '.4g') for k in loss_names) + " |")
        lines += ["", "They drift apart between configs after a few iterations although the first step agrees "
                      "(tests check its losses and gradients against eager): Adam's first updates move every weight "
                      "by about lr whatever its gradient's size, so rounding differences in near-zero gradients "
                      "change the trajectory."]
    lines += ["", "Environment:", ""]
    lines += [f"- {k}: {v}" for k, v in env.items() if v is not None]
    lines += ["", "Command:", "", "```", report["command"], "```", ""]
    return "\n".join(lines)


def write(report: dict, out: Path, device: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_step_{device}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"train_step_{device}.md").write_text(markdown(report))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, _, inputs = load_photos(args.size, args.seed)
    print(f"inputs: {inputs}", flush=True)
    report = {"command": "python " + shlex.join(sys.argv if argv is None else ["benchmarks/train_step.py", *argv]),
              "environment": environment(args), "options": vars(args), "inputs": inputs,
              "results": [], "summary": {}}
    print(f"environment: {report['environment']}", flush=True)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="train_step_inductor_") as cache_root:
        for i, name in enumerate(args.configs, 1):
            print(f"[{i}/{len(args.configs)}] {name}", flush=True)
            report["results"].append(run_config(name, args, cache_root))
            report["summary"] = summarise(report["results"], args.goal)
            write(report, out, args.device)
    print()
    print(markdown(report))
    print(f"wrote {out / f'train_step_{args.device}.json'} and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
