"""GPU speed of gantk.kernels against eager torch and torch.compile of the same chain.

- IN+act: instance_norm_act (ReLU; and no activation + residual, the ResnetBlock tail) against
  F.instance_norm + F.relu (+ add), eager and compiled: ms, achieved GB/s counting the minimum traffic
  (x read once, the output written once, the residual read once), its fraction of the device's HBM
  peak, speed-up over eager.
- reflect-pad conv: reflect_pad_conv2d against F.pad(reflect) + F.conv2d (cuDNN, benchmark mode),
  eager and compiled: ms, TFLOP/s (2 * N * OC * OH * OW * IC * KH * KW), speed-up.
- generator: resnet_9blocks (ngf 64) forward at 256 px, patched against unpatched.
Every row also records the largest difference from eager, so a fast but wrong kernel shows.
Goals (issue 5): IN+act >= 80% of HBM peak and >= 2x eager; reflect-pad conv >= 1.2x F.pad + cuDNN at batch 1.

    python benchmarks/kernels.py               # a CUDA GPU: writes benchmarks/results/kernels_<gpu>.json and .md
    python benchmarks/kernels.py --batches 1 --dtypes fp16 --no-compile
    python benchmarks/kernels.py --interpret   # CPU smoke run: tiny cases through Triton's interpreter, writes nothing
    python benchmarks/kernels.py --compile-only --archs 80 90   # no GPU: compile what the launchers pick, report
                                                                # registers, spills, shared memory, vector loads

Without a CUDA GPU (and without --interpret) it stops with an error: there is nothing to measure.
Results files come only from GPU runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names of the torch dtypes
DTYPES = tuple(TORCH_DTYPES)
IN_SHAPES = [(64, 256, 256), (128, 128, 128), (256, 64, 64)]  # (C, H, W) of the ResNet generator's norms
CONV_SHAPES = [  # (name, IC, H, W, OC, k, padding, stride)
    ("resnet block 3x3", 256, 64, 64, 256, 3, 1, 1),
    ("resnet first 7x7", 3, 256, 256, 64, 7, 3, 1),
    ("resnet last 7x7", 64, 256, 256, 3, 7, 3, 1),
    ("style res 3x3", 128, 64, 64, 128, 3, 1, 1),
    ("style down 3x3 s2", 32, 256, 256, 64, 3, 1, 2),
]
GOALS = {"in_peak": 0.8, "in_speedup": 2.0, "conv_speedup_b1": 1.2}
# compute capability: (SMs of the usual part, max shared memory per block in bytes; CUDA programming guide)
ARCHS = {80: (108, 166912), 86: (84, 101376), 89: (142, 101376), 90: (132, 232448)}


def torch_dtype(name: str):
    import torch
    return getattr(torch, TORCH_DTYPES[name])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interpret", action="store_true", help="CPU smoke run under TRITON_INTERPRET=1 (no timings kept)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument("--out", default="benchmarks/results", help="folder for kernels_<gpu>.json/.md")
    p.add_argument("--compile-only", action="store_true",
                   help="no GPU needed: compile every kernel variant the launchers pick for the shapes above, for "
                        "--archs, and report its resources (fails on a compile error or too much shared memory)")
    p.add_argument("--archs", type=int, nargs="+", choices=sorted(ARCHS), default=[90],
                   help="CUDA compute capabilities for --compile-only (80 A100, 86/89 RTX/L4/L40S, 90 H100/H200)")
    return p.parse_args(argv)


def chains():
    """(name, ours, eager) callables of the IN+act and conv cases."""
    import torch.nn.functional as F

    from gantk.kernels import instance_norm_act, reflect_pad_conv2d
    return {
        "in_relu": (lambda x, r: instance_norm_act(x, activation="relu"), lambda x, r: F.relu(F.instance_norm(x))),
        "in_residual": (lambda x, r: instance_norm_act(x, activation="none", residual=r),
                        lambda x, r: r + F.instance_norm(x)),
        "conv": (lambda x, w, b, p, s: reflect_pad_conv2d(x, w, b, p, s),
                 lambda x, w, b, p, s: F.conv2d(F.pad(x, (p,) * 4, mode="reflect"), w, b, s)),
    }


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


# --- the smoke run -----------------------------------------------------------------------------------
def smoke() -> int:
    """Tiny cases through the interpreter: each must match eager; the times say nothing about a GPU."""
    import torch

    from gantk.kernels import use_triton
    cases, rows, ok = chains(), [], True
    x, r = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    for name in ("in_relu", "in_residual"):
        rows.append(("instance_norm_act", name, *_smoke_case(cases[name], (x, r), 1e-5)))
    args = (torch.randn(2, 4, 6, 5), torch.randn(5, 4, 3, 3), torch.randn(5), 1, 1)
    rows.append(("reflect_pad_conv2d", "3x3", *_smoke_case(cases["conv"], args, 1e-4)))
    path = "Triton, interpreted on CPU" if use_triton(x) else "torch ops (triton is not installed)"
    print(f"{path}: a smoke test, not a speed figure")
    print(f"{'op':<20}{'case':<14}{'max |diff|':>12}{'s':>8}")
    for op, case, diff, secs, good in rows:
        print(f"{op:<20}{case:<14}{diff:>12.2e}{secs:>8.2f}{'' if good else '  WRONG'}")
        ok &= good
    return 0 if ok else 1


def _smoke_case(fns, args, tol):
    ours, eager = fns
    t0 = time.perf_counter()
    got = ours(*args)
    secs = time.perf_counter() - t0
    diff = max_diff(got, eager(*args))
    return diff, secs, diff <= tol


# --- compile-only report --------------------------------------------------------------------------------
class _CompileOnlyDriver:
    """What Triton's JIT asks the active driver when it compiles (and never launches) for `arch`."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


class _CompileInstead:
    """Takes a kernel's place in its launcher: `kernel[grid](*args)` compiles every config the autotuner
    would try for these arguments (with the JIT's own specialisation of them) and records each result."""

    def __init__(self, kernel, name: str, rows: list, case: dict):
        self.kernel, self.name, self.rows, self.case = kernel, name, rows, case

    def __getitem__(self, grid):
        return self.compile

    def compile(self, *args, **kwargs):
        from triton.runtime.autotuner import Autotuner
        fn, configs = self.kernel, [None]
        if isinstance(fn, Autotuner):
            fn, configs = fn.fn, fn.configs
            prune = getattr(self.kernel, "early_config_prune", None)
            if prune:
                configs = prune(configs, dict(zip(fn.arg_names, args), **kwargs))
        for cfg in configs:
            meta = cfg.all_kwargs() if cfg else {}
            row = dict(self.case, kernel=self.name.strip("_"),
                       config=",".join(f"{v}" for k, v in meta.items() if k.startswith("BLOCK") or k.startswith("num_")
                                       and k != "num_ctas") or "-")
            try:
                row.update(_resources(fn.warmup(*args, grid=(1,), **kwargs, **meta)))
            except Exception as e:  # noqa: BLE001 - a compile error is the finding to report
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
            self.rows.append(row)


def _resources(kernel) -> dict:
    """Shared memory, registers and stack (spills) of a compiled kernel (cuobjdump), and its global loads
    by PTX instruction: vectorised (ld.global.v2/v4, cp.async) or scalar."""
    import subprocess
    import tempfile

    import triton
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage))
    ptx = kernel.asm["ptx"]
    return {"shared": kernel.metadata.shared, "regs": int(found.get("REG", -1)),
            "spill": int(found.get("STACK", 0)) + int(found.get("LOCAL", 0)),
            "vector_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v[248]\b|\bcp\.async\.c[ag]\b", ptx)),
            "scalar_loads": len(re.findall(r"\bld\.global(?!(?:\.\w+)*\.v[248]\b)(?:\.\w+)+", ptx))}


def compile_report(archs, batches, dtype_names) -> list[dict]:
    """Rows of (arch, op, case, dtype, layout, shape, kernel, config, resources) for the real shapes."""
    import torch
    from triton.runtime import driver

    import gantk.kernels.instance_norm as ina
    import gantk.kernels.reflect_conv as rc
    kernels = [(ina, n) for n in ("_in_stats_kernel", "_in_fwd_kernel", "_in_bwd_sums_kernel", "_in_bwd_kernel")]
    kernels.append((rc, "_reflect_conv_kernel"))
    originals = {(m, n): getattr(m, n) for m, n in kernels}
    rows, programs = [], ina.cuda_programs
    layouts = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
    try:
        for arch in archs:
            driver.set_active(_CompileOnlyDriver(arch))
            ina.cuda_programs = lambda device, per_sm=4, sms=ARCHS[arch][0]: per_sm * sms
            for dt, b, (lay, fmt) in ((d, b, lf) for d in dtype_names for b in batches for lf in layouts.items()):
                def case(op, name, shape):
                    c = dict(arch=arch, op=op, case=name, dtype=dt, layout=lay, shape=shape)
                    for m, n in kernels:
                        setattr(m, n, _CompileInstead(originals[m, n], n, rows, c))

                for c, h, w in IN_SHAPES:
                    x = torch.empty(b, c, h, w, dtype=torch_dtype(dt), memory_format=fmt)
                    stats = torch.empty(b, c)
                    for act, res in (("relu", None), ("none", x)):
                        case("instance_norm_act", f"fwd {act}" + (" + residual" if res is not None else ""), [b, c, h, w])
                        ina._forward_triton(x, None, None, 1e-5, act, 0.2, res, x.dtype, fmt)
                        case("instance_norm_act", f"bwd {act}", [b, c, h, w])
                        ina._backward_triton(x, x, None, None, stats, stats, act, 0.2, fmt)
                for name, ic, h, w, oc, k, p, s in CONV_SHAPES:
                    x = torch.empty(b, ic, h, w, dtype=torch_dtype(dt), memory_format=fmt)
                    case("reflect_pad_conv2d", name, [b, ic, h, w, oc, k, p, s])
                    rc._forward_triton(x, torch.empty(oc, ic, k, k, dtype=x.dtype), torch.empty(oc, dtype=x.dtype),
                                       p, s, fmt)
    finally:
        for (m, n), k in originals.items():
            setattr(m, n, k)
        ina.cuda_programs = programs  # (the compile-only driver stays: this process has no GPU to go back to)
    return rows


def compile_only(args) -> int:
    """Print the compile report; 1 if any variant failed to compile or needs more shared memory than its
    architecture has."""
    rows, seen, shown = compile_report(args.archs, args.batches, args.dtypes), set(), []
    for r in rows:  # the same machine code as a row before (another shape of the same specialisation) is left out
        key = (r["arch"], r["kernel"], r["dtype"], r["layout"], r["config"], r.get("shared"), r.get("regs"), r.get("error"))
        if key not in seen:
            seen.add(key)
            shown.append(r)
    print(f"{'sm':<4}{'kernel':<22}{'dtype':<6}{'layout':<7}{'config':<18}{'shared':>8}{'regs':>6}{'spill':>7}"
          f"{'vec ld':>8}{'scalar ld':>10}  case")
    bad = spills = 0
    for r in shown:
        head = f"{r['arch']:<4}{r['kernel']:<22}{r['dtype']:<6}{r['layout']:<7}{r['config']:<18}"
        if "error" in r:
            bad += 1
            print(f"{head}COMPILE ERROR {r['error']}  {r['case']} {r['shape']}")
            continue
        over = r["shared"] > ARCHS[r["arch"]][1]
        bad, spills = bad + over, spills + (r["spill"] > 0)
        print(f"{head}{r['shared']:>8}{r['regs']:>6}{r['spill']:>7}{r['vector_loads']:>8}{r['scalar_loads']:>10}  "
              f"{r['op']} {r['case']} {r['shape']}{'  OVER SHARED MEMORY LIMIT' if over else ''}")
    print(f"{len(shown)} distinct variants ({len(rows)} launches) compiled for sm_{', sm_'.join(map(str, args.archs))}: "
          f"{'all fit' if not bad else f'{bad} failed or over the shared-memory limit'}; {spills} of them spill registers")
    return 1 if bad else 0


# --- the GPU run ---------------------------------------------------------------------------------------
def bench_ms(fn) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def hbm_peak(torch) -> tuple[float, str]:
    """(bytes/s, where the figure comes from): the data-sheet peak, else a measured 1 GiB device copy."""
    from gantk.bench import gpu_peaks
    name = torch.cuda.get_device_name()
    peaks = gpu_peaks(name)
    if peaks:
        return peaks[0] * 1e12, f"data sheet ({name}: {peaks[0]} TB/s)"
    src = torch.empty(2**28, device="cuda")
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * src.nbytes / (ms * 1e-3), f"measured device copy ({name})"


def compiled(fn, skip: bool):
    import torch
    return None if skip else torch.compile(fn, fullgraph=True, dynamic=False)


def time_case(ours, eager, args, skip_compile):
    """ms of ours / eager / compiled eager, and ours' largest difference from eager."""
    comp = compiled(eager, skip_compile)
    want = eager(*args)
    row = {"max_diff": max_diff(ours(*args), want), "ours_ms": bench_ms(lambda: ours(*args)),
           "eager_ms": bench_ms(lambda: eager(*args))}
    row["compile_ms"] = bench_ms(lambda: comp(*args)) if comp else None
    row["speedup_vs_eager"] = row["eager_ms"] / row["ours_ms"]
    row["speedup_vs_compile"] = row["compile_ms"] / row["ours_ms"] if comp else None
    return row


def run_gpu(args, save=lambda rep: None) -> dict:
    """The timed rows for --dtypes x --batches; `save(report so far)` after each row, so a run stopped
    early keeps what it measured."""
    import torch
    torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = 256
    peak, peak_source = hbm_peak(torch)
    cases, rows = chains(), []
    from gantk.runtime import environment
    env = environment()
    rep = {"device": torch.cuda.get_device_name(), "hbm_peak_gbps": peak / 1e9, "peak_source": peak_source,
           "torch": torch.__version__, "triton": __import__("triton").__version__, "cuda": torch.version.cuda,
           "date": env["date"], "environment": env, "cudnn_benchmark": True, "goals": GOALS, "rows": rows}

    def add(row):
        rows.append(row)
        print(_line(row), flush=True)
        save(rep)
    for dt in args.dtypes:
        dtype = torch_dtype(dt)
        for b in args.batches:
            for c, h, w in IN_SHAPES:
                x = torch.randn(b, c, h, w, device="cuda", dtype=dtype)
                r = torch.randn_like(x)
                for name in ("in_relu", "in_residual"):
                    row = time_case(*cases[name], (x, r), args.no_compile)
                    nbytes = x.nbytes * (3 if name == "in_residual" else 2)
                    row.update(kind="in", case=name, dtype=dt, shape=[b, c, h, w], gbps=nbytes / (row["ours_ms"] * 1e6))
                    row["peak_fraction"] = row["gbps"] * 1e9 / peak
                    add(row)
            for name, ic, h, w, oc, k, p, s in CONV_SHAPES:
                x = torch.randn(b, ic, h, w, device="cuda", dtype=dtype)
                wt = torch.randn(oc, ic, k, k, device="cuda", dtype=dtype) / (ic * k * k) ** 0.5
                bias = torch.randn(oc, device="cuda", dtype=dtype)
                row = time_case(*cases["conv"], (x, wt, bias, p, s), args.no_compile)
                oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
                flops = 2 * b * oc * oh * ow * ic * k * k
                row.update(kind="conv", case=name, dtype=dt, shape=[b, ic, h, w, oc, k, p, s],
                           tflops=flops / (row["ours_ms"] * 1e9), cudnn_tflops=flops / (row["eager_ms"] * 1e9))
                add(row)
        add(generator_row(dt, dtype))
    return rep


def generator_row(dt: str, dtype) -> dict:
    """resnet_9blocks forward at 1x3x256x256: patched against unpatched (eager)."""
    import copy

    import torch

    from gantk.acceleration import patch
    from gantk.models import define_G
    net = define_G(3, 3, 64, "resnet_9blocks", norm="instance").to("cuda", dtype).eval()
    fused = patch(copy.deepcopy(net))
    x = torch.rand(1, 3, 256, 256, device="cuda", dtype=dtype) * 2 - 1
    with torch.no_grad():
        row = {"max_diff": max_diff(fused(x), net(x)), "ours_ms": bench_ms(lambda: fused(x)),
               "eager_ms": bench_ms(lambda: net(x)), "compile_ms": None, "speedup_vs_compile": None}
    row["speedup_vs_eager"] = row["eager_ms"] / row["ours_ms"]
    return {**row, "kind": "generator", "case": "resnet_9blocks forward", "dtype": dt, "shape": [1, 3, 256, 256]}


def _f(v, spec=".3f", unit=""):
    return "-" if v is None else format(v, spec) + unit


def _line(r) -> str:
    extra = (f"{r['gbps']:.0f} GB/s ({r['peak_fraction']:.0%} of peak)" if r["kind"] == "in"
             else f"{r['tflops']:.1f} TFLOP/s (cuDNN {r['cudnn_tflops']:.1f})" if r["kind"] == "conv" else "")
    return (f"{r['kind']:<9} {r['case']:<22} {r['dtype']:<5} {str(r['shape']):<28} ours {r['ours_ms']:.3f} ms, "
            f"eager {r['eager_ms']:.3f} ms ({r['speedup_vs_eager']:.2f}x), compile {_f(r['compile_ms'])} ms; {extra}; "
            f"max |diff| {r['max_diff']:.1e}")


def markdown(rep: dict) -> str:
    g = rep["goals"]
    lines = [f"# gantk.kernels on {rep['device']}", "",
             f"torch {rep['torch']}, triton {rep['triton']}, CUDA {rep['cuda']}, {', '.join(rep.get('dates', [rep['date']]))}; HBM peak "
             f"{rep['hbm_peak_gbps']:.0f} GB/s ({rep['peak_source']}); medians of triton.testing.do_bench; "
             "cuDNN in benchmark mode; compile = torch.compile(fullgraph=True) of the eager chain.", "",
             f"## InstanceNorm + activation (goal: >= {g['in_peak']:.0%} of HBM peak and >= {g['in_speedup']}x eager)",
             "", "| case | dtype | N x C x H x W | ours (ms) | eager (ms) | compile (ms) | vs eager | vs compile | GB/s | "
             "of peak | goal | max diff |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in (r for r in rep["rows"] if r["kind"] == "in"):
        met = r["peak_fraction"] >= g["in_peak"] and r["speedup_vs_eager"] >= g["in_speedup"]
        lines.append(f"| {r['case']} | {r['dtype']} | {'x'.join(map(str, r['shape']))} | {r['ours_ms']:.3f} | "
                     f"{r['eager_ms']:.3f} | {_f(r['compile_ms'])} | {r['speedup_vs_eager']:.2f}x | "
                     f"{_f(r['speedup_vs_compile'], '.2f', 'x')} | {r['gbps']:.0f} | {r['peak_fraction']:.0%} | "
                     f"{'met' if met else 'missed'} | {r['max_diff']:.1e} |")
    lines += ["", f"## Reflect-pad conv (goal at batch 1: >= {g['conv_speedup_b1']}x F.pad + cuDNN)", "",
              "| case | dtype | N, IC, H, W, OC, k, p, s | ours (ms) | F.pad+cuDNN (ms) | compile (ms) | vs cuDNN | "
              "vs compile | TFLOP/s | cuDNN TFLOP/s | goal | max diff |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in (r for r in rep["rows"] if r["kind"] == "conv"):
        goal = ("met" if r["speedup_vs_eager"] >= g["conv_speedup_b1"] else "missed") if r["shape"][0] == 1 else "-"
        lines.append(f"| {r['case']} | {r['dtype']} | {', '.join(map(str, r['shape']))} | {r['ours_ms']:.3f} | "
                     f"{r['eager_ms']:.3f} | {_f(r['compile_ms'])} | {r['speedup_vs_eager']:.2f}x | "
                     f"{_f(r['speedup_vs_compile'], '.2f', 'x')} | {r['tflops']:.1f} | {r['cudnn_tflops']:.1f} | "
                     f"{goal} | "
                     f"{r['max_diff']:.1e} |")
    lines += ["", "## Whole generator", "", "| case | dtype | patched (ms) | unpatched (ms) | speed-up | max diff |",
              "|---|---|---:|---:|---:|---:|"]
    for r in (r for r in rep["rows"] if r["kind"] == "generator"):
        lines.append(f"| {r['case']} | {r['dtype']} | {r['ours_ms']:.3f} | {r['eager_ms']:.3f} | "
                     f"{r['speedup_vs_eager']:.2f}x | {r['max_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_only:
        os.environ.pop("TRITON_INTERPRET", None)  # before gantk.kernels defines its kernels
        return compile_only(args)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before gantk.kernels defines its kernels
        return smoke()
    import torch
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py: no CUDA GPU here, nothing to measure (use --interpret for a CPU smoke run)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"kernels_{re.sub(r'[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_')}.json"
    earlier = json.loads(path.read_text()) if path.exists() else None

    def save(rep):
        rep = merged(rep, earlier)
        path.write_text(json.dumps(rep, indent=1))
        path.with_suffix(".md").write_text(markdown(rep))

    run_gpu(args, save)
    print(f"wrote {path.with_suffix('.md')}")
    return 0


def merged(rep: dict, earlier: dict | None) -> dict:
    """`rep` plus the rows of an earlier results file from the same device and versions that `rep` did not
    measure again: runs split by --dtypes or --batches (each within a time limit) add up to one table."""
    same = earlier and all(earlier.get(k) == rep[k] for k in ("device", "torch", "triton"))
    if not same:
        return rep

    def key(r):
        return r["kind"], r["case"], r["dtype"], tuple(r["shape"])
    new = {key(r) for r in rep["rows"]}
    return {**rep, "rows": [r for r in earlier["rows"] if key(r) not in new] + rep["rows"],
            "dates": sorted(set(earlier.get("dates", [earlier["date"]]) + [rep["date"]]))}


if __name__ == "__main__":
    sys.exit(main())
