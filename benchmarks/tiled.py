"""Tiled translation of a large photo against whole-image translation: cost per megapixel and peak memory.

Runs the ResNet generator (resnet_9blocks, ngf 64, random weights: speed and memory do not depend on them)
once per configuration, each in a fresh process so its peak resident memory (ru_maxrss) is its own:
whole images at --whole sizes, and one --large px image in tiles of each --tile size through gantk's
tiled_forward (InstanceNorm statistics from one pass at --stats px, then tile by tile), for each --kernels
path. The cost per megapixel is set against the whole image at the first --whole size.

    python benchmarks/tiled.py [--large 4096] [--tile 512 1024] [--kernels none winograd]
        # -> benchmarks/results/tiled_cpu.json, .md
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def measure(size: int, tile: int, kernels: str, stats: int, repeats: int, threads: int) -> dict:
    """In this process: seconds per forward (median; one run when tiled) and peak RSS."""
    import resource

    import torch

    from gantk.acceleration import apply_kernels
    from gantk.models import define_G
    from gantk.translate import fitted_tile, tile_starts, tiled_forward

    torch.set_num_threads(threads)
    net = apply_kernels(define_G(3, 3, 64, "resnet_9blocks", norm="instance").eval(), kernels, warn=False)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times = []
    with torch.inference_mode():
        if not tile:
            net(x)  # warm-up
        for _ in range(1 if tile else repeats):
            t = time.perf_counter()
            y = tiled_forward(net, x, tile, 32, 4, stats) if tile else net(x)
            times.append(time.perf_counter() - t)
    assert torch.isfinite(y).all()
    side = fitted_tile(size, tile, 32, 4) if tile else size
    tiles = len(tile_starts(size, side, 32)) ** 2 if tile else 1
    seconds = statistics.median(times)
    return {"size": size, "tile": tile, "tile_side": side, "tiles": tiles, "kernels": kernels, "seconds": seconds,
            "s_per_mpix": seconds / (size * size / 1e6),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--whole", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--large", type=int, default=4096)
    ap.add_argument("--tile", type=int, nargs="+", default=[512, 1024], help="tile sizes (px, before fitting)")
    ap.add_argument("--stats", type=int, default=1024, help="px of the InstanceNorm statistics pass")
    ap.add_argument("--kernels", nargs="+", default=["none", "winograd"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "tiled_cpu"))
    a = ap.parse_args()
    if a.child:
        size, tile, kernels = a.child.split(",")
        print(json.dumps(measure(int(size), int(tile), kernels, a.stats, a.repeats, a.threads)))
        return
    from gantk.runtime import environment
    rows = []
    for kernels in a.kernels:
        for size, tile in [*((s, 0) for s in a.whole), *((a.large, t) for t in a.tile)]:
            cmd = [sys.executable, __file__, "--child", f"{size},{tile},{kernels}", "--stats", str(a.stats),
                   "--repeats", str(a.repeats), "--threads", str(a.threads)]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(row)
            print(f"{kernels:>9} {size:>5} px {'tiles of ' + str(row['tile_side']) if tile else 'whole':>14}: "
                  f"{row['seconds']:8.2f} s, {row['s_per_mpix']:6.2f} s/Mpx, peak {row['peak_rss_mb']:7.0f} MB",
                  flush=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    doc = {"benchmark": "tiled translation vs whole images", "generator": "resnet_9blocks ngf 64 (random weights)",
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": datetime.date.today().isoformat(),
           "environment": environment(), "load_average_at_end": load, "overlap": 32, "stats_size": a.stats,
           "threads": a.threads, "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Tiled translation on {doc['environment'].get('cpu', 'CPU')}", "",
             f"`{doc['command']}` on {doc['date']}; {doc['generator']}, batch 1, {a.threads} threads, overlap 32 px, "
             f"InstanceNorm statistics from one {a.stats} px pass; load average at the end {' '.join(load)}.", "",
             "| kernels | image | tiles | seconds | s / Mpx | vs whole | peak RSS MB |", "|---|---|---|---|---|---|---|"]
    base = {r["kernels"]: r for r in rows if not r["tile"] and r["size"] == a.whole[0]}
    for r in rows:
        b = base.get(r["kernels"], r)
        tiles = f"{r['tiles']} x {r['tile_side']} px" if r["tile"] else "whole"
        lines.append(f"| {r['kernels']} | {r['size']} px | {tiles} | {r['seconds']:.2f} | {r['s_per_mpix']:.2f} | "
                     f"{r['s_per_mpix'] / b['s_per_mpix']:.2f}x | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"'vs whole': cost per megapixel against the whole {a.whole[0]} px image with the same kernels."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
