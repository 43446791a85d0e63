"""How fast the ResNet generator can get on this CPU: the arithmetic lower bound against the bench's goals,
and how the time grows with the image size.

Measures the best fp32 GEMM rate torch reaches here (a 2048^3 `mm`, the residual blocks' Winograd `bmm`,
36 x 256x256x256, and oneDNN's 3x3 convolution), counts the generator's GEMM FLOPs with Winograd F(4x4,3x3)
and F(6x6,3x3) for its stride-1 256-channel 3x3 convs (direct convolutions elsewhere), and times eager fp32
and gantk's winograd path at each size (eager also under winograd's malloc, called in turn with it), and
where winograd's forward spends its time, so the bound (FLOPs / best rate, no transforms, norms or memory
traffic) and the bound of the present design (its Winograd GEMMs and other convolutions as measured, the
rest free) can be set against eager / 3 (issue 22's goal), and time(2s) / time(s) against the 4x of the
pixel count. With --int8 it also quantises the generator with ONNX Runtime (static QDQ, per-channel int8 weights,
uint8 activations calibrated on 2 sample photos) and reports its PSNR and time on 2 others (at the first
size).

    python benchmarks/cpu_limits.py [--sizes 256 512 1024] [--int8]   # -> benchmarks/results/cpu_limits.json, .md
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn


def seconds(fn, repeats: int) -> float:
    """Median seconds per call after two warm-up calls."""
    fn(), fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def gemm_rates() -> dict[str, float]:
    """GFLOP/s of torch's fp32 GEMMs at the sizes that matter, of gantk's C GEMM where winograd uses it, and of
    oneDNN's direct 3x3 convolution (the bound takes the best of them)."""
    from gantk.kernels import native
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(36, 256, 256), torch.randn(36, 256, 256)
    m, k = torch.randn(1, 256, 64, 64), torch.randn(256, 256, 3, 3)
    flop = 2 * 36 * 256**3
    rates = {"mm 2048^3": 2 * 2048**3 / seconds(lambda: a @ b, 10) / 1e9,
             "bmm 36x256x256x256": flop / seconds(lambda: torch.bmm(x, w), 30) / 1e9}
    if native.gemm_fast():
        xp, out = x.view(36, 32, 8, 256).transpose(2, 3).contiguous(), torch.empty(36, 256, 256)
        rates["gantk C gemm 36x256x256x256"] = flop / seconds(lambda: native.gemm(xp, w, out), 30) / 1e9
    rates["conv 3x3 256ch 64x64 (oneDNN)"] = 2 * 9 * 256**2 * 64**2 / seconds(
        lambda: torch.nn.functional.conv2d(m, k, padding=1), 20) / 1e9
    return rates


def gemm_gflops(net: nn.Module, x: torch.Tensor, m: int | None) -> float:
    """GFLOP of the convolutions' multiply-adds, with Winograd F(m x m, 3x3) for the stride-1 3x3 convs of
    256 channels (m None: every conv direct); edge tiles count whole."""
    total = []

    def hook(mod, inputs, out):
        ic, oc, (k, _) = mod.in_channels, mod.out_channels, mod.kernel_size
        pixels = inputs[0].shape[-2] * inputs[0].shape[-1] if isinstance(mod, nn.ConvTranspose2d) else \
            out.shape[-2] * out.shape[-1]
        if m and k == 3 and mod.stride == (1, 1) and ic == oc == 256 and not isinstance(mod, nn.ConvTranspose2d):
            tiles = math.ceil(out.shape[-2] / m) * math.ceil(out.shape[-1] / m)
            total.append(2 * tiles * (m + 2) ** 2 * ic * oc)
        else:
            total.append(2 * pixels * ic * oc * k * k)
    handles = [mod.register_forward_hook(hook) for mod in net.modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return sum(total) / 1e9


def int8_check(net: nn.Module, size: int) -> dict:
    """ONNX Runtime static int8 quantisation of `net`: PSNR against eager fp32 and ms, vs fp32 ONNX."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from gantk.export.parity import errors, parity_batch, sample_photos
    from gantk.export.spec import spec_for_generator
    photos = parity_batch(spec_for_generator(net, "cyclegan"), sample_photos(4), size)[0]
    tests, calib = photos[:2], photos[2:]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": c[None].numpy()} for c in calib])

        def get_next(self):
            return next(self.it, None)
    with tempfile.TemporaryDirectory(prefix="gantk-int8-") as d:  # the two ONNX files, removed at the end
        tmp = Path(d)
        torch.onnx.export(net, tests[:1], tmp / "fp32.onnx", input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
        quantize_static(str(tmp / "fp32.onnx"), str(tmp / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        out = {}
        for name in ("fp32", "int8"):
            sess = ort.InferenceSession(str(tmp / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
            psnr = []
            for x in tests:
                with torch.no_grad():
                    ref = net(x[None]).numpy()
                psnr.append(errors(ref, sess.run(None, {"x": x[None].numpy()})[0])["psnr"])
            x0 = tests[:1].numpy()
            out[name] = {"psnr_db": psnr, "ms": 1000 * seconds(lambda: sess.run(None, {"x": x0}), 5)}
        return out


def calls_at(size: int, repeats: int | None) -> int:
    """Timed calls per size: `repeats`, or 10 at 256 px and fewer above."""
    return repeats or min(10, max(3, 10 * 256 ** 2 // size ** 2))


def forward_ms(net: nn.Module, size: int, repeats: int | None) -> float:
    """Median ms of a batch-1 forward at `size` px."""
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        return 1000 * seconds(lambda: net(x), calls_at(size, repeats))


def paired_ms(nets: list[nn.Module], size: int, repeats: int | None) -> tuple[list[float], list[float]]:
    """(median ms of each net, median of the calls' paired ratios net[0] / net[i]) of batch-1 forwards at
    `size` px, the nets called in turn (one warm-up each), so that a drifting host skews no ratio."""
    x = torch.rand(1, 3, size, size) * 2 - 1
    ts = [[] for _ in nets]
    with torch.no_grad():
        for net in nets:
            net(x)
        for _ in range(calls_at(size, repeats)):
            for net, t in zip(nets, ts):
                t0 = time.perf_counter()
                net(x)
                t.append(time.perf_counter() - t0)
    return ([1000 * statistics.median(t) for t in ts],
            [statistics.median(a / b for a, b in zip(ts[0], t)) for t in ts])


def winograd_parts(fast: nn.Module, size: int, calls: int = 3) -> dict[str, float]:
    """Where a winograd forward at `size` px spends its time, ms (the fastest of `calls` after a warm-up
    forward): the Winograd GEMMs (gantk's C GEMM or torch's bmm) with their GFLOP/s, the tile transforms, the
    weight transforms, the other convolutions (strided, transposed, first and last: direct, at GEMM speed),
    the norms (+ activation, + residual), and the rest (glue)."""
    from gantk.kernels import native, winograd
    from gantk.kernels.modules import InstanceNormAct
    spent, flop, started = {}, [0], {}

    def timed(key, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - t
            if key == "gemm":  # out is (points, O, T) and args[1] (points, K, T)
                flop[0] += 2 * out.numel() * args[1].shape[1]
            return out
        return call

    def module_key(m):
        if isinstance(m, InstanceNormAct):
            return "norms"
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not isinstance(m, winograd.WinogradConv2d):
            return "other convolutions"
        return None

    patched = [(native, "gemm", "gemm"), (torch, "bmm", "gemm"), (native, "tiles_in", "tile transforms"),
               (native, "tiles_out_rows", "tile transforms"), (winograd, "transform_weight", "weight transforms")]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patched]
    hooks = []
    for m in fast.modules():
        if key := module_key(m):
            hooks.append(m.register_forward_pre_hook(lambda mod, args: started.__setitem__(mod, time.perf_counter())))
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, key=key: spent.__setitem__(key, spent[key] + time.perf_counter() - started[mod])))
    x = torch.rand(1, 3, size, size) * 2 - 1
    best = None
    keys = ("gemm", "tile transforms", "weight transforms", "other convolutions", "norms")
    with torch.no_grad():
        try:
            spent.update(dict.fromkeys(keys, 0.0))
            fast(x)
            for mod, name, key in patched:
                setattr(mod, name, timed(key, getattr(mod, name)))
            for _ in range(calls):
                spent.update(dict.fromkeys(keys, 0.0))
                flop[0] = 0
                t = time.perf_counter()
                fast(x)
                total = 1000 * (time.perf_counter() - t)
                if best is None or total < best["total"]:
                    parts = {k: 1000 * v for k, v in spent.items()}
                    best = {**parts, "rest": total - sum(parts.values()), "total": total, "gemm_gflop": flop[0] / 1e9,
                            "gemm_gflops_per_s": flop[0] / max(spent["gemm"], 1e-9) / 1e9}
        finally:
            for mod, name, fn in saved:
                setattr(mod, name, fn)
            for h in hooks:
                h.remove()
    return best


def size_row(net: nn.Module, size: int, eager_ms: float, winograd_ms: float, best: float) -> dict:
    """Eager and winograd ms, GEMM GFLOP and their bound at the best GEMM rate, at `size` px."""
    x = torch.rand(1, 3, size, size) * 2 - 1
    flops = {"direct": gemm_gflops(net, x, None), "F(4x4,3x3)": gemm_gflops(net, x, 4),
             "F(6x6,3x3)": gemm_gflops(net, x, 6)}
    return {"size": size, "eager_ms": eager_ms, "winograd_ms": winograd_ms, "goal_ms_3x": eager_ms / 3,
            "gemm_gflop": flops, "bound_ms": {k: 1000 * v / best for k, v in flops.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="image sizes in px (batch 1)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (64: the published generators)")
    p.add_argument("--repeats", type=int, help="timed calls per size and path (default: 10 at 256 px, fewer above)")
    p.add_argument("--int8", action="store_true", help="also the ONNX Runtime int8 check (needs onnx, onnxruntime)")
    p.add_argument("--out", default="benchmarks/results", help="folder for cpu_limits.json/.md")
    args = p.parse_args(argv)
    from gantk.acceleration import patch_winograd
    from gantk.models.networks import define_G
    from gantk.runtime import cpu_name
    torch.manual_seed(0)
    net = define_G(3, 3, args.ngf, "resnet_9blocks", norm="instance").eval()
    rates = gemm_rates()
    best = max(rates.values())
    # eager first, as the reference runs: patch_winograd also changes glibc's malloc for the whole process
    # (keep_freed_memory: no page faults for large temporaries); then eager again under that malloc, called in
    # turn with winograd, which isolates the kernels' part of the speed-up
    eager = [forward_ms(net, size, args.repeats) for size in args.sizes]
    fast = copy.deepcopy(net)
    patch_winograd(fast)
    rows = []
    for size, e in zip(args.sizes, eager):
        (kept, wino), (_, ratio) = paired_ms([net, fast], size, args.repeats)  # ratio: kept-heap eager / winograd
        rows.append({**size_row(net, size, e, wino, best), "eager_kept_heap_ms": kept, "paired_speedup": ratio})
    for r in rows:
        r["winograd_parts_ms"] = w = winograd_parts(fast, r["size"])
        r["design_bound_ms"] = w["gemm"] + w["other convolutions"]
    rep = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_name(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "gemm_gflops_per_s": rates, "sizes": rows}
    if args.int8:
        rep["int8"] = int8_check(net, args.sizes[0])
    command = " ".join(["python benchmarks/cpu_limits.py", "--sizes", *map(str, args.sizes)] + ["--int8"] * args.int8
                       + [f"--ngf {args.ngf}"] * (args.ngf != 64) + [f"--repeats {args.repeats}"] * bool(args.repeats))
    lines = [f"# CPU limits: resnet_9blocks (ngf {args.ngf}), batch 1", "",
             f"{rep['date']}; {rep['cpu']}, {rep['threads']} threads; torch {rep['torch']}; `{command}`", "",
             "GEMM rate (fp32): " + ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in rates.items()), "",
             "| size | eager ms | eager ms, kept heap | winograd ms | speed-up: vs eager, paired vs kept-heap eager | "
             "time / previous size's (eager, winograd) | GEMM GFLOP: direct, F(4x4,3x3), F(6x6,3x3) | at the best "
             "GEMM rate, ms (no transforms, norms or memory traffic) | most speed-up any backend can reach: eager / "
             "F(6x6,3x3) bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for prev, r in zip([None, *rows], rows):
        growth = "-" if prev is None else (f"{r['eager_ms'] / prev['eager_ms']:.2f}, "
                                           f"{r['winograd_ms'] / prev['winograd_ms']:.2f}")
        lines.append(f"| {r['size']} | {r['eager_ms']:.1f} | {r['eager_kept_heap_ms']:.1f} | {r['winograd_ms']:.1f} | "
                     f"{r['eager_ms'] / r['winograd_ms']:.2f}x, {r['paired_speedup']:.2f}x | {growth} | "
                     + ", ".join(f"{v:.2f}" for v in r["gemm_gflop"].values()) + " | "
                     + ", ".join(f"{v:.1f}" for v in r["bound_ms"].values())
                     + f" | {r['eager_ms'] / r['bound_ms']['F(6x6,3x3)']:.2f}x |")
    lines += ["", "eager: the reference process (glibc's default malloc: large temporaries come from fresh pages); "
              "kept heap: eager after patching, under the malloc winograd sets (freed memory kept), called in turn "
              "with winograd.", "",
              "Where a winograd forward spends its time (ms, the fastest of 3 timed calls; the GEMMs' rate in "
              "GFLOP/s), and the most this design can reach: eager / (Winograd GEMMs + other convolutions), with "
              "the transforms, norms and glue free:", "",
              "| size | total | Winograd GEMMs | GEMM GFLOP/s | tile transforms | weight transforms | other convs "
              "(strided, transposed, first, last) | norms | rest (glue) | GEMMs + other convs | most this design "
              "reaches: vs eager, vs kept-heap eager |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r["winograd_parts_ms"]
        share = lambda k: f"{w[k]:.1f} ({w[k] / w['total']:.0%})"  # noqa: E731
        lines.append(f"| {r['size']} | {w['total']:.1f} | {share('gemm')} | {w['gemm_gflops_per_s']:.0f} | "
                     f"{share('tile transforms')} | {share('weight transforms')} | {share('other convolutions')} | "
                     f"{share('norms')} | {share('rest')} | {r['design_bound_ms']:.1f} | "
                     f"{r['eager_ms'] / r['design_bound_ms']:.2f}x, {r['eager_kept_heap_ms'] / r['design_bound_ms']:.2f}x |")
    if args.int8:
        lines += ["", f"| ONNX Runtime, {args.sizes[0]} px | PSNR vs eager fp32 (dB), 2 photos | ms |", "|---|---|---|",
                  *(f"| {k} | {', '.join(f'{p:.1f}' for p in v['psnr_db'])} | {v['ms']:.1f} |"
                    for k, v in rep["int8"].items())]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_limits.json").write_text(json.dumps(rep, indent=1))
    (out / "cpu_limits.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
