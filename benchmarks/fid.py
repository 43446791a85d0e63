"""Seconds for `gantk eval` FID/KID of N generated vs N real images (256 px), cold and with the real set's
features cached.

Real images: random square crops of the scikit-image photos that `gantk.data.sample` builds its sets from;
generated images: other crops in the sample set's vintage look (`gantk.data.sample.vintage`), or give
--real/--fake folders. Each run is the whole command (`python -m gantk eval`, a fresh process):
  cold  empty feature cache and no converted network: both sets through the Inception;
  warm  a second generated set against the same real set: real features from the cache.
Also timed in this process: each backend's milliseconds per image on a 32-image batch (and the largest
feature difference between them), and the Fréchet distance of the 2048-d statistics (eigh route; --sqrtm adds
pytorch-fid's scipy route). Without --inception-weights the Inception has random weights: the timings hold,
the FID values mean nothing (the results say which).

    python benchmarks/fid.py                      # N=1000, writes benchmarks/results/fid_cpu.{json,md}
    python benchmarks/fid.py --n 200 --inception-weights pt_inception-2015-12-05-6726825d.pth
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gantk import metrics, runtime
from gantk.checkpoints import sha256_file
from gantk.data.sample import TEST_SOURCES, TRAIN_SOURCES, vintage
from gantk.nn import inception

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="images per set")
    p.add_argument("--size", type=int, default=256, help="image side in px")
    p.add_argument("--real", default=None, help="folder of real images (default: photo crops)")
    p.add_argument("--fake", nargs=2, default=None, metavar="DIR", help="two generated folders (cold, warm run)")
    p.add_argument("--inception-weights", default="random", help="pytorch-fid's file; 'random': timing only")
    p.add_argument("--fid-backend", default="auto", choices=inception.BACKENDS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sqrtm", action="store_true", help="also time pytorch-fid's scipy sqrtm (minutes)")
    p.add_argument("--work", default=None, help="folder for the image sets and the cache (default: a temp dir)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fid_cpu"), help="path without suffix")
    return p.parse_args(argv)


def write_crops(folder: Path, n: int, size: int, seed: int, look=None) -> Path:
    """n random square crops (30-100% of the short side) of the sample photos, size x size PNGs."""
    import skimage.data
    photos = [np.asarray(Image.open(Path(skimage.data.__file__).parent / name).convert("RGB"))
              for name in (*TRAIN_SOURCES, *TEST_SOURCES)]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(h, w))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = np.asarray(Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.Resampling.LANCZOS))
        Image.fromarray(look(crop) if look else crop).save(folder / f"{i:05d}.png")
    return folder


def timed_eval(fake: Path, real: Path, cache: Path, out: Path, args) -> dict:
    """One `gantk eval` in a fresh process: wall seconds, CPU seconds it used (all its threads: what other
    processes took from it does not count), the load average around it, its record."""
    cmd = [sys.executable, "-m", "gantk", "eval", "--results", str(fake), "--reference", str(real),
           "--inception-weights", args.inception_weights, "--fid-backend", args.fid_backend,
           "--batch-size", str(args.batch_size), "--cache-dir", str(cache), "--out", str(out)]
    load, before = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode:
        raise SystemExit(f"gantk eval failed: {proc.stderr.strip().splitlines()[-1]}")
    doc = json.loads(out.read_text())
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 1), "load_avg_1min_before": load,
            "load_avg_1min_after": os.getloadavg()[0], "features_from": doc["features_from"], "fid": doc["fid"], "kid": doc["kid"],
            "command": shlex.join(["python", "-m", "gantk", *cmd[3:]])}


def backend_timings(real: Path, weights: str, cache: Path) -> dict:
    """ms per image of each available backend on one 32-image batch (after a warm-up), and the largest
    feature difference against torch."""
    files = sorted(real.glob("*.png"))[:32]
    x = torch.stack([metrics.fid_input(np.asarray(Image.open(f).convert("RGB"))) for f in files])
    net = inception.load_fid_inception(weights)
    out, ref = {}, None
    for backend in ("torch", "openvino"):
        if backend == "openvino" and inception._openvino() is None:
            continue
        digest = "random" if weights == "random" else sha256_file(weights)
        run = inception.feature_extractor(net, backend, inception.openvino_ir_path(cache, digest))
        run(x[:2])
        t = time.perf_counter()
        f = run(x).numpy()
        out[backend] = {"ms_per_image": round((time.perf_counter() - t) / len(x) * 1000, 1)}
        if ref is None:
            ref = f
        else:
            out[backend]["max_abs_diff_vs_torch"] = float(np.abs(f - ref).max())
            out[backend]["max_abs_feature"] = float(np.abs(ref).max())
    return out


def frechet_timings(cache: Path, with_sqrtm: bool) -> dict:
    """Seconds of the Fréchet distance on the cached 2048-d features of two sets: fid_from_features (what
    gantk eval runs), then frechet_distance on their statistics (eigh; scipy sqrtm with --sqrtm)."""
    feats = [np.load(p) for p in sorted(cache.glob("*.npy"), key=lambda p: p.stat().st_mtime)[:2]]
    t = time.perf_counter()
    value = metrics.fid_from_features(*feats)
    out = {"from_features": {"seconds": round(time.perf_counter() - t, 2), "fid": value}}  # gantk eval's route
    stats = [metrics.feature_statistics(f) for f in feats]
    for method in ("eigh", "sqrtm") if with_sqrtm else ("eigh",):
        t = time.perf_counter()
        value = metrics.frechet_distance(*stats[0], *stats[1], method=method)
        out[method] = {"seconds": round(time.perf_counter() - t, 2), "fid": value}
    return out


def write_results(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    env, runs = doc["environment"], doc["runs"]
    lines = [f"# FID of {doc['n']} generated vs {doc['n']} real images, {doc['size']} px, CPU", "",
             f"{env['date']}, {env['cpu']} ({env['cpu_count']} cores), torch {torch.__version__}, "
             f"Inception backend `{doc['fid_backend']}`, weights `{doc['inception_weights']}`"
             + (" (random weights: timings only, FID values meaningless)" if doc["inception_weights"] == "random"
                else ""), "",
             f"Command: `{doc['command']}`", "",
             "| run | seconds | CPU seconds | features computed | load avg (1 min) before / after | FID |",
             "|---|---:|---:|---|---|---:|"]
    for name, r in runs.items():
        computed = [k for k, v in r["features_from"].items() if v == "computed"]
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {', '.join(computed) or 'none'} | "
                     f"{r['load_avg_1min_before']:.2f} / {r['load_avg_1min_after']:.2f} | {r['fid']:.3f} |")
    lines += ["", "Inception per image (32-image batch, 299 px): "
              + ", ".join(f"{k} {v['ms_per_image']} ms" for k, v in doc["backends"].items())]
    if "openvino" in doc["backends"] and "max_abs_diff_vs_torch" in doc["backends"]["openvino"]:
        b = doc["backends"]["openvino"]
        lines.append(f"(OpenVINO vs torch: max |feature difference| {b['max_abs_diff_vs_torch']:.2e}, features up "
                     f"to {b['max_abs_feature']:.2f})")
    lines += ["", "Fréchet distance from the 2048-d features (from_features: gantk eval's route): "
              + ", ".join(f"{k} {v['seconds']} s" for k, v in doc["frechet"].items()), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv=None) -> None:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="gantk_fid_bench_"))
    real = Path(args.real) if args.real else write_crops(work / "real", args.n, args.size, 0)
    fakes = [Path(f) for f in args.fake] if args.fake else [
        write_crops(work / f"fake{i}", args.n, args.size, i, vintage) for i in (1, 2)]
    cache = work / "cache"
    if cache.exists() and any(cache.rglob("*")):
        raise SystemExit(f"{cache}: not empty; give another --work for a cold run")
    runs = {}
    for name, fake in zip(("cold", "warm"), fakes):
        runs[name] = timed_eval(fake, real, cache, work / f"{name}.json", args)
        print(name, runs[name]["seconds"], "s", runs[name]["features_from"], flush=True)
    record = json.loads((work / "warm.json").read_text())["protocol"]
    doc = {"n": args.n, "size": args.size, "inception_weights": args.inception_weights,
           "fid_backend": record["fid_backend"], "fid_resize": record["fid_resize"],
           "command": shlex.join(["python", "benchmarks/fid.py", *(argv if argv is not None else sys.argv[1:])]),
           "runs": runs, "backends": backend_timings(real, args.inception_weights, cache),
           "frechet": frechet_timings(cache, args.sqrtm), "environment": runtime.environment()}
    write_results(doc, Path(args.out))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
