"""How fast the ResNet generator can get on this CPU: the arithmetic lower bound against the bench's 4x goal.

Measures the best fp32 GEMM rate torch reaches here (a 2048^3 `mm` and the residual blocks' Winograd
`bmm`, 36 x 256x256x256), counts the generator's GEMM FLOPs with Winograd F(4x4,3x3) and F(6x6,3x3)
for its stride-1 256-channel 3x3 convs (direct convolutions elsewhere), and times eager fp32, so the
bound (FLOPs / best rate, no transforms, norms or memory traffic) can be set against eager / 4. With
--int8 it also quantises the generator with ONNX Runtime (static QDQ, per-channel int8 weights, uint8
activations calibrated on 2 sample photos) and reports its PSNR and time on 2 others.

    python benchmarks/cpu_limits.py [--int8]   # -> benchmarks/results/cpu_limits.json and .md
"""
from __future__ import annotations

import argparse
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
    """GFLOP/s of torch's fp32 GEMMs at the sizes that matter."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(36, 256, 256), torch.randn(36, 256, 256)
    return {"mm 2048^3": 2 * 2048**3 / seconds(lambda: a @ b, 10) / 1e9,
            "bmm 36x256x256x256": 2 * 36 * 256**3 / seconds(lambda: torch.bmm(x, w), 30) / 1e9}


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
    tmp = Path(tempfile.mkdtemp(prefix="gantk-int8-"))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--int8", action="store_true", help="also the ONNX Runtime int8 check (needs onnx, onnxruntime)")
    p.add_argument("--out", default="benchmarks/results", help="folder for cpu_limits.json/.md")
    args = p.parse_args(argv)
    from gantk.runtime import cpu_name
    from gantk.models.networks import define_G
    torch.manual_seed(0)
    net = define_G(3, 3, 64, "resnet_9blocks", norm="instance").eval()
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    rates = gemm_rates()
    best = max(rates.values())
    with torch.no_grad():
        eager_ms = 1000 * seconds(lambda: net(x), 10)
    flops = {"direct": gemm_gflops(net, x, None), "F(4x4,3x3)": gemm_gflops(net, x, 4), "F(6x6,3x3)": gemm_gflops(net, x, 6)}
    rep = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_name(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "size": args.size,
           "gemm_gflops_per_s": rates, "eager_ms": eager_ms, "goal_ms_4x": eager_ms / 4, "gemm_gflop": flops,
           "bound_ms": {k: 1000 * v / best for k, v in flops.items()}}
    if args.int8:
        rep["int8"] = int8_check(net, args.size)
    lines = [f"# CPU limits: resnet_9blocks, {args.size} px, batch 1", "",
             f"{rep['date']}; {rep['cpu']}, {rep['threads']} threads; torch {rep['torch']}; "
             "`python benchmarks/cpu_limits.py" + (" --int8`" if args.int8 else "`"), "",
             "GEMM rate (fp32): " + ", ".join(f"{k}: {v:.1f} GFLOP/s" for k, v in rates.items()),
             f"eager fp32: {eager_ms:.1f} ms, so 4x is {eager_ms / 4:.1f} ms", "",
             "| convolutions | GEMM GFLOP | at the best GEMM rate, ms (no transforms, norms or memory traffic) |",
             "|---|---|---|",
             *(f"| {k} | {v:.2f} | {rep['bound_ms'][k]:.1f} |" for k, v in flops.items())]
    if args.int8:
        lines += ["", "| ONNX Runtime | PSNR vs eager fp32 (dB), 2 photos | ms |", "|---|---|---|",
                  *(f"| {k} | {', '.join(f'{p:.1f}' for p in v['psnr_db'])} | {v['ms']:.1f} |" for k, v in rep["int8"].items())]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_limits.json").write_text(json.dumps(rep, indent=1))
    (out / "cpu_limits.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
