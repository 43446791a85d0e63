"""Inference: run a generator over images, whole or in overlapping tiles blended without seams."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.errors import GantkError
from gantk.io import save_image


def blend_window(size: int, overlap: int) -> torch.Tensor:
    """1-D weights: ramps of `overlap` px at both ends (never exactly 0), 1 in the middle."""
    w = torch.ones(size)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        w[:overlap] = ramp
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` px overlapping by at least `overlap`."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


class FixedInstanceNorm(nn.Module):
    """InstanceNorm with statistics measured beforehand (per sample and channel)."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float):
        super().__init__()
        self.mean, self.var, self.eps = mean, var, eps

    def forward(self, x):
        return (x - self.mean) / torch.sqrt(self.var + self.eps)


@contextlib.contextmanager
def global_instance_stats(net: nn.Module, x: torch.Tensor, max_size: int):
    """Within the block, every InstanceNorm of `net` uses the statistics of the whole image `x`
    (measured on `x` scaled down to at most `max_size` px on its long side), so all tiles agree."""
    norms = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.affine]
    if not norms:
        yield
        return
    scale = min(1.0, max_size / max(x.shape[-2:]))
    if scale < 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    stats = {}
    hooks = [m.register_forward_pre_hook(
        lambda m, a, n=n: stats.__setitem__(n, torch.var_mean(a[0].float(), (2, 3), unbiased=False, keepdim=True)))
        for n, m in norms]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    swapped = []
    for name, m in norms:
        parent_name, _, key = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        var, mean = stats[name]
        parent._modules[key] = FixedInstanceNorm(mean, var, m.eps)
        swapped.append((parent, key, m))
    try:
        yield
    finally:
        for parent, key, m in swapped:
            parent._modules[key] = m


@torch.no_grad()
def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int, overlap: int = 32, multiple: int = 4,
                  stats_size: int = 1024) -> torch.Tensor:
    """net(x) computed tile by tile (NCHW); overlapping outputs are averaged with ramp weights.

    Memory is bounded by one tile (plus one pass at `stats_size` px that measures InstanceNorm
    statistics of the whole image, so tiles share them and no seams appear). Tiles are `tile` px,
    rounded down to `multiple`.
    """
    with global_instance_stats(net, x, stats_size):
        return _tiled(net, x, tile, overlap, multiple)


def _tiled(net, x, tile, overlap, multiple):
    tile = tile // multiple * multiple
    if tile <= 0 or overlap >= tile:
        raise GantkError(f"--tile {tile} must be a positive multiple of {multiple} larger than --tile_overlap {overlap}")
    n, _, h, w = x.shape
    if h % multiple or w % multiple:
        raise GantkError(f"tiled input {h}x{w} must be a multiple of {multiple} on both sides")
    out = weight = None
    for y in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            th, tw = min(tile, h), min(tile, w)
            y_out = net(x[:, :, y : y + th, x0 : x0 + tw]).float()
            if out is None:
                out = torch.zeros(n, y_out.shape[1], h, w, device=x.device)
                weight = torch.zeros(1, 1, h, w, device=x.device)
            wy = blend_window(th, overlap if th < h else 0).to(x.device)
            wx = blend_window(tw, overlap if tw < w else 0).to(x.device)
            win = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, y : y + th, x0 : x0 + tw] += y_out * win
            weight[:, :, y : y + th, x0 : x0 + tw] += win
    return out / weight


def write_html(folder: Path, title: str, rows: list[tuple[str, list[tuple[str, str]]]]) -> Path:
    """index.html: one row per input, images side by side with labels."""
    body = "\n".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td><figure><img src='{html.escape(src)}'><figcaption>{html.escape(label)}</figcaption></figure></td>"
            for label, src in imgs) + "</tr>" for name, imgs in rows)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif} img{max-width:384px}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><table>{body}</table></body></html>")
    path = Path(folder) / "index.html"
    path.write_text(page)
    return path


@torch.no_grad()
def translate_images(net: nn.Module, items, out_dir: str | Path, title: str, tile: int | None = None,
                     overlap: int = 32, multiple: int = 4, device="cpu", stats_size: int = 1024) -> list[Path]:
    """Translate (name, CHW tensor in [-1, 1]) items; writes images/<name>_real.png, _fake.png and index.html."""
    out_dir = Path(out_dir)
    rows, written = [], []
    for name, x in items:
        x = x.unsqueeze(0).to(device)
        y = tiled_forward(net, x, tile, overlap, multiple, stats_size) if tile else net(x)
        stem = Path(name).stem
        real = save_image(x, out_dir / "images" / f"{stem}_real.png")
        fake = save_image(y, out_dir / "images" / f"{stem}_fake.png")
        written.append(fake)
        rows.append((Path(name).name, [("real", f"images/{real.name}"), ("fake", f"images/{fake.name}")]))
    write_html(out_dir, title, rows)
    return written


def resolve_generator(name, checkpoints_dir, epoch, direction, which, weights, **arch) -> tuple[nn.Module, str, dict]:
    """(generator in eval mode, its file, its saved training options) from --weights or --name/--epoch."""
    from gantk.models import load_generator
    saved = {}
    if weights:
        path = Path(weights)
    else:
        if not name:
            raise GantkError("give --name (a trained experiment) or --weights (a generator file)")
        folder = Path(checkpoints_dir) / name
        opt_file = folder / "train_opt.json"
        if opt_file.is_file():
            saved = json.loads(opt_file.read_text())
        which = which or (("G_A" if direction == "AtoB" else "G_B") if saved.get("model", "cyclegan") == "cyclegan" else "G")
        path = folder / f"{epoch}_net_{which}.pth"
        if not path.is_file() and which == "G_A" and (folder / f"{epoch}_net_G.pth").is_file():
            path = folder / f"{epoch}_net_G.pth"
    given = {k: v for k, v in arch.items() if v is not None}
    if saved:
        defaults = {k: saved[k] for k in ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc") if k in saved}
        if which == "G_B":
            defaults["input_nc"], defaults["output_nc"] = defaults.get("output_nc", 3), defaults.get("input_nc", 3)
        given = {**defaults, **given}
    kw = {"netG": given.get("netG"), "ngf": given.get("ngf", 64), "norm": given.get("norm", "instance"),
          "use_dropout": not given.get("no_dropout", True), "input_nc": given.get("input_nc", 3),
          "output_nc": given.get("output_nc", 3)}
    return load_generator(path, **kw), str(path), saved


def input_files(input_path, dataroot, phase, direction) -> list[Path]:
    from gantk.io import is_image_file, list_images
    if input_path:
        p = Path(input_path)
        if p.is_file():
            if not is_image_file(p):
                raise GantkError(f"--input {p}: not an image file")
            return [p]
        if not p.exists():
            raise GantkError(f"--input {p}: no such file or folder")
        return list_images(p)
    if dataroot:
        sub = Path(dataroot) / f"{phase}{'A' if direction == 'AtoB' else 'B'}"
        return list_images(sub if sub.is_dir() else dataroot)
    raise GantkError("give --input (image or folder) or --dataroot (data set)")


def run_translate(name=None, checkpoints_dir="./checkpoints", epoch="latest", direction="AtoB", which=None,
                  weights=None, dataroot=None, phase="test", input_path=None, output=None, preprocess="none",
                  load_size=256, crop_size=256, num_test=50, tile=0, tile_overlap=32, tile_stats_size=1024,
                  device="auto", **arch) -> Path:
    """The `gantk translate` command: returns the output folder (images/ + index.html)."""
    from gantk.data.transforms import transform
    from gantk.io import load_image
    from gantk.models import size_multiple
    from gantk.models.base import resolve_device
    net, path, _ = resolve_generator(name, checkpoints_dir, epoch, direction, which, weights, **arch)
    multiple, gray = size_multiple(net.arch["netG"]), net.arch["input_nc"] == 1
    files = input_files(input_path, dataroot, phase, direction)[:num_test]
    dev = resolve_device(device)
    net.to(dev)

    def items():
        for f in files:
            x = transform(load_image(f), preprocess, load_size, crop_size, None, grayscale=gray, base=multiple)
            if not tile and (x.shape[1] % multiple or x.shape[2] % multiple):
                raise GantkError(f"{f}: size {x.shape[2]}x{x.shape[1]} is not a multiple of {multiple} for this U-Net")
            yield f.name, x

    out = Path(output or Path("results") / (name or Path(path).stem) / f"test_{epoch}")
    translate_images(net, items(), out, f"{Path(path).name}: {len(files)} images", tile or None, tile_overlap,
                     multiple, dev, tile_stats_size)
    return out
