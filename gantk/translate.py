"""Inference: run a generator over images, whole or in overlapping tiles blended without seams;
BicycleGAN: several outputs per input (encoded style and random z) with a diversity figure. With --metrics,
each output that has a target (an A|B pair's other half, or a --reference image of the same name) is scored
by PSNR/SSIM/MAE (+ LPIPS) on the written 8-bit files, as `gantk eval --paired` scores them."""
from __future__ import annotations

import contextlib
import html
import itertools
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from gantk import metrics
from gantk.errors import GantkError
from gantk.io import check_writable, load_image, save_image

log = logging.getLogger("gantk.translate")


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


def fitted_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest tile side (a multiple of `multiple`, at most `tile`) that covers `length` with as many tiles
    as `tile` needs: the spare pixels are spread over the tiles instead of computed twice in overlaps (4096 px
    in 512 px tiles: 9 tiles of 484 px, 4356 px computed, instead of 9 of 512, 4608 px)."""
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    fit = -(-(length + (n - 1) * overlap) // n)
    return min(tile, -(-fit // multiple) * multiple)


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
    (measured on `x` scaled down to at most `max_size` px on its long side), so all tiles agree. Yields
    net(x) when that measuring pass ran on `x` itself (no scaling needed), else None."""
    norms = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.affine]
    if not norms:
        yield None
        return
    scale = min(1.0, max_size / max(x.shape[-2:]))
    if scale < 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
    stats = {}
    hooks = [m.register_forward_pre_hook(
        lambda m, a, n=n: stats.__setitem__(n, torch.var_mean(a[0].float(), (2, 3), unbiased=False, keepdim=True)))
        for n, m in norms]
    try:
        out = net(x)
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
        yield out if scale == 1 else None
    finally:
        for parent, key, m in swapped:
            parent._modules[key] = m


@torch.no_grad()
def tiled_forward(net: nn.Module, x: torch.Tensor, tile: int, overlap: int = 32, multiple: int = 4,
                  stats_size: int = 1024) -> torch.Tensor:
    """net(x) computed tile by tile (NCHW); overlapping outputs are averaged with ramp weights.

    Memory is bounded by one tile (plus one pass at `stats_size` px that measures InstanceNorm
    statistics of the whole image, so tiles share them and no seams appear). Tiles are `tile` px,
    rounded down to `multiple`. A net with InstanceNorm and an image no larger than `stats_size` needs
    no tiles: the statistics pass is then the whole-image output itself.
    """
    with global_instance_stats(net, x, stats_size) as whole:
        return whole.float() if whole is not None else _tiled(net, x, tile, overlap, multiple)


def tile_size(tile: int, overlap: int, multiple: int = 1) -> int:
    """--tile rounded down to `multiple`; a GantkError unless that is larger than --tile_overlap."""
    size = tile // multiple * multiple
    if size <= overlap:
        rounded = f" (rounded down to a multiple of {multiple}: {size})" if size != tile else ""
        raise GantkError(f"--tile {tile}{rounded} must be larger than --tile_overlap {overlap}")
    return size


def _tiled(net, x, tile, overlap, multiple):
    tile = tile_size(tile, overlap, multiple)
    n, _, h, w = x.shape
    if h % multiple or w % multiple:
        raise GantkError(f"tiled input {h}x{w} must be a multiple of {multiple} on both sides")
    th, tw = fitted_tile(h, tile, overlap, multiple), fitted_tile(w, tile, overlap, multiple)
    wy = blend_window(th, overlap if th < h else 0).to(x.device)
    wx = blend_window(tw, overlap if tw < w else 0).to(x.device)
    win = (wy[:, None] * wx[None, :])[None, None]
    starts = list(itertools.product(tile_starts(h, th, overlap), tile_starts(w, tw, overlap)))
    out = weight = None
    for y, x0 in progress(starts, "tiles", "tile") if len(starts) > 1 else starts:
        y_out = net(x[:, :, y : y + th, x0 : x0 + tw]).float()
        if out is None:
            out = torch.zeros(n, y_out.shape[1], h, w, device=x.device)
            weight = torch.zeros(1, 1, h, w, device=x.device)
        out[:, :, y : y + th, x0 : x0 + tw] += y_out * win
        weight[:, :, y : y + th, x0 : x0 + tw] += win
    return out / weight


def progress(items, desc: str, unit: str, total: int | None = None):
    """A tqdm bar on a terminal (none in logs and tests), gone when done."""
    return tqdm(items, desc=desc, unit=unit, total=total, leave=False, dynamic_ncols=True, disable=None)


OOM_MESSAGES = ("out of memory", "can't allocate memory")


@contextlib.contextmanager
def explain_oom(name: str, hint: str):
    """Out of memory (CUDA or CPU) while translating `name` -> a one-line GantkError with `hint`."""
    try:
        yield
    except RuntimeError as e:  # torch.OutOfMemoryError is one
        if not isinstance(e, torch.OutOfMemoryError) and not any(m in str(e) for m in OOM_MESSAGES):
            raise
        raise GantkError(f"{name}: out of memory; {hint}") from None


def write_html(folder: Path, title: str, rows: list[tuple[str, list[tuple[str, str]]]]) -> Path:
    """index.html: one row per input, images side by side with labels."""
    body = "\n".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td><figure><img src='{html.escape(quote(src))}'>"
            f"<figcaption>{html.escape(label)}</figcaption></figure></td>"
            for label, src in imgs) + "</tr>" for name, imgs in rows)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif} img{max-width:384px}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><table>{body}</table></body></html>")
    path = Path(folder) / "index.html"
    path.write_text(page)
    return path


def input_names(files: list[Path]) -> list[str]:
    """Each file's path relative to the folder that holds them all (a/x.png, b/x.png; x.png for one file)."""
    root = os.path.commonpath([f.parent for f in files]) if files else "."
    return [f.relative_to(root).as_posix() for f in files]


def output_stem(name: str, stems: dict[str, str] | None = None) -> str:
    """Where the outputs of input `name` go under images/: `stems[name]`, else `name` without its suffix
    (a/x.png -> a/x: images/a/x_fake.png)."""
    return stems[name] if stems and name in stems else str(PurePosixPath(name).with_suffix(""))


def output_stems(names: list[str]) -> dict[str, str]:
    """{name: output stem}, all different (also ignoring case): `output_stem`, plus the suffix for names that
    would share it (x.png, x.jpg -> x_png, x_jpg), then _2, _3, ... if still taken. Compute it on all the
    inputs, so names do not change with --num_test."""
    base = {n: output_stem(n) for n in names}
    shared = Counter(b.lower() for b in base.values())
    stems, taken = {}, set()
    for n, b in base.items():
        suffixed = f"{b}_{PurePosixPath(n).suffix[1:]}"
        stem, i = b if shared[b.lower()] == 1 else suffixed, 1
        while stem.lower() in taken:
            i += 1
            stem = f"{suffixed}_{i}"
        taken.add(stem.lower())
        stems[n] = stem
    return stems


SCORES = (("psnr", "PSNR", ".2f", " dB"), ("ssim", "SSIM", ".4f", ""), ("mae", "MAE", ".3f", ""),
          ("lpips", "LPIPS", ".4f", ""))


def score_files(fake: Path, target: Path, lpips_net=None) -> dict[str, float]:
    """PSNR (dB), SSIM, MAE (0..255) and, given `lpips_net`, LPIPS of two written images read back as 8-bit RGB."""
    x, y = (np.asarray(load_image(p, "RGB")) for p in (fake, target))
    out = {"psnr": metrics.psnr(x, y), "ssim": metrics.ssim(x, y), "mae": metrics.mae(x, y)}
    return {**out, "lpips": metrics.lpips(lpips_net, x, y)} if lpips_net is not None else out


def describe_scores(scores: dict[str, float]) -> str:
    """`PSNR 23.10 dB, SSIM 0.8123, MAE 7.123` (+ LPIPS)."""
    return ", ".join(f"{label} {scores[k]:{fmt}}{unit}" for k, label, fmt, unit in SCORES if k in scores)


def mean_scores(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in per_image.values()])) for k in next(iter(per_image.values()), {})}


@torch.no_grad()
def translate_images(net: nn.Module, items, out_dir: str | Path, title: str, tile: int | None = None,
                     overlap: int = 32, multiple: int = 4, device="cpu", stats_size: int = 1024,
                     stems: dict[str, str] | None = None, scores: dict | None = None, lpips_net=None) -> list[Path]:
    """Translate (name, CHW input, CHW target or None) items, tensors in [-1, 1]; writes
    images/<stem>_real.png, _fake.png (and _target.png for pairs), stems from `output_stem`, and index.html.
    Given a `scores` dict, it is filled with {name: `score_files` of _fake vs _target} for every pair, shown per
    row and as the mean in the title."""
    out_dir = Path(out_dir)
    hint = f"use a smaller --tile than {tile}" if tile else "translate in tiles, e.g. --tile 512"
    rows, written = [], []
    for name, x, target in items:
        x = x.unsqueeze(0).to(device)
        with explain_oom(name, hint):
            y = tiled_forward(net, x, tile, overlap, multiple, stats_size) if tile else net(x)
        cells = [("real", x), ("fake", y)] + ([("target", target)] if target is not None else [])
        paths = [save_image(t, out_dir / "images" / f"{output_stem(name, stems)}_{label}.png") for label, t in cells]
        written.append(paths[1])
        row_name = name
        if scores is not None and target is not None:
            scores[name] = score_files(paths[1], paths[2], lpips_net)
            row_name = f"{name} ({describe_scores(scores[name])})"
        rows.append((row_name, [(label, p.relative_to(out_dir).as_posix()) for (label, _), p in zip(cells, paths)]))
    if scores:
        title = f"{title}; mean {describe_scores(mean_scores(scores))}"
    write_html(out_dir, title, rows)
    return written


def dataroot_folder(dataroot, phase: str, direction: str) -> tuple[Path, bool]:
    """(the folder of a --dataroot that translate reads, whether its files are A|B pairs): <phase>A/ (<phase>B/
    for BtoA) first, then <phase>/ as pairs (the aligned layout), else the folder itself."""
    root = Path(dataroot)
    sub = root / f"{phase}{'A' if direction == 'AtoB' else 'B'}"
    if sub.is_dir():
        return sub, False
    if (root / phase).is_dir():
        return root / phase, True
    return root, False


def input_files(input_path, dataroot, phase, direction, aligned=False) -> tuple[list[Path], bool]:
    """(image files, whether each holds an A|B pair side by side). A --dataroot is read as `dataroot_folder`
    says."""
    from gantk.io import is_image_file, list_images
    if input_path:
        p = Path(input_path)
        if p.is_file():
            if not is_image_file(p):
                raise GantkError(f"--input {p}: not an image file")
            return [p], aligned
        if not p.exists():
            raise GantkError(f"--input {p}: no such file or folder")
        return list_images(p), aligned
    if dataroot:
        folder, pairs = dataroot_folder(dataroot, phase, direction)
        return list_images(folder), aligned or pairs
    raise GantkError("give --input (image or folder) or --dataroot (data set)")


def load_input(path: Path, aligned: bool, direction: str):
    """(input image, paired target image or None): A|B files are split in halves, BtoA swaps them."""
    from gantk.io import load_image
    img = load_image(path)
    if not aligned:
        return img, None
    w, h = img.size
    if w < 2:
        raise GantkError(f"{path}: too narrow to hold an A|B pair")
    A, B = img.crop((0, 0, w // 2, h)), img.crop((w // 2, 0, w, h))
    return (A, B) if direction == "AtoB" else (B, A)


def reference_files(names: list[str], files: list[Path], aligned: bool, reference: str | Path) -> dict[str, Path]:
    """{input name: its --reference image}, matched by relative path without suffix (a/x.png <-> a/x.jpg), each the
    size of its input; a one-line GantkError for pairs, missing references or other sizes, before any work."""
    from gantk.io import list_images
    root = Path(reference)
    if aligned:
        raise GantkError(f"--reference {reference}: the inputs are A|B pairs, which hold their targets already")
    if not root.is_dir():
        raise GantkError(f"--reference {reference}: no such folder")
    refs: dict[str, Path] = {}
    for f in list_images(root):
        key = f.relative_to(root).with_suffix("").as_posix()
        if key in refs:
            raise GantkError(f"--reference {reference}: {refs[key].name} and {f.name} would both match {key}")
        refs[key] = f
    missing = [n for n in names if output_stem(n) not in refs]
    if missing:
        raise GantkError(f"--reference {reference}: no image named like {len(missing)} of the {len(names)} inputs "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    matched = {n: refs[output_stem(n)] for n in names}
    for (n, ref), f in zip(matched.items(), files):
        if image_size(ref) != image_size(f):
            raise GantkError(f"--reference {ref}: {'x'.join(map(str, image_size(ref)))} px, but its input {f} is "
                             f"{'x'.join(map(str, image_size(f)))} px (a target must match its input's size)")
    return matched


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        load_image(path)  # raises the one-line error for an unreadable image
        raise


def read_items(files: dict[str, Path], aligned: bool, direction: str, prep: dict, arch: dict, multiple: int,
               tiled: bool = False, references: dict[str, Path] | None = None):
    """(name, input CHW, paired target CHW or None) per {name: file}, in [-1, 1] and sized for a net of `arch`;
    targets are the other half of A|B pairs, or `references[name]`."""
    from gantk.data.transforms import transform
    for name, f in progress(files.items(), "translate", "image", len(files)):
        a, b = load_input(f, aligned, direction)
        if references:
            b = load_image(references[name])
        x = transform(a, **prep, params=None, grayscale=arch["input_nc"] == 1, base=multiple)
        if not tiled and (x.shape[1] % multiple or x.shape[2] % multiple):
            raise GantkError(f"{f}: size {x.shape[2]}x{x.shape[1]} is not a multiple of {multiple} for this U-Net")
        y = None if b is None else transform(b, **prep, params=None, grayscale=arch["output_nc"] == 1, base=multiple)
        yield name, x, y


def write_record(out: Path, **info) -> Path:
    """translate.json: how the images were made (weights, eval/BatchNorm mode, seed, diversity)."""
    path = Path(out) / "translate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    return path


def check_options(num_test, load_size, crop_size, tile, tile_overlap, tile_stats_size, n_samples, kernels):
    """One-line errors for option values that no input could use, before any work."""
    for option, v in (("load_size", load_size), ("crop_size", crop_size), ("tile_stats_size", tile_stats_size),
                      ("n_samples", n_samples)):
        if v < 1:
            raise GantkError(f"--{option} must be positive, got {v}")
    if num_test == 0 or num_test < -1:
        raise GantkError(f"--num_test must be positive (or -1: all images), got {num_test}")
    if tile < 0:
        raise GantkError(f"--tile must be positive (or 0: whole images), got {tile}")
    if tile_overlap < 0:
        raise GantkError(f"--tile_overlap must be >= 0, got {tile_overlap}")
    if tile and kernels == "triton":
        raise GantkError("--tile swaps the InstanceNorm modules for whole-image statistics: use --kernels none or "
                         "winograd with it")
    if tile:
        tile_size(tile, tile_overlap)


def run_translate(name=None, checkpoints_dir="./checkpoints", epoch="latest", direction="AtoB", which=None,
                  weights=None, dataroot=None, phase="test", input_path=None, output=None, preprocess="none",
                  load_size=256, crop_size=256, num_test=50, tile=0, tile_overlap=32, tile_stats_size=1024,
                  device="auto", model=None, eval_mode=None, seed=0, aligned=False, n_samples=5, sync=False,
                  encoder=None, kernels="none", score=False, reference=None, lpips_net="alex", lpips_weights=None,
                  lpips_backbone=None, **arch) -> Path:
    """The `gantk translate` command: returns the output folder (images/, index.html, translate.json).
    `score` (--metrics) scores each output against its target (A|B pairs, or `reference` images by name).

    eval_mode None follows the reference test scripts: networks with BatchNorm (pix2pix) run without
    eval() (batch statistics, dropout on), others in eval mode; BicycleGAN always in eval mode. Outputs are
    named by `output_stems`; --num_test -1 translates all inputs.
    """
    from gantk.acceleration import apply_kernels
    from gantk.models import load, prepare_for_inference, size_multiple
    from gantk.models.loading import load_encoder
    from gantk.nn.inference import has_batchnorm
    from gantk.runtime import resolve_device
    check_options(num_test, load_size, crop_size, tile, tile_overlap, tile_stats_size, n_samples, kernels)
    out = Path(output or Path("results") / (name or Path(weights or "weights").stem) / f"test_{epoch}")
    check_writable(out, "--output", folder=True)
    torch.manual_seed(seed)  # makes test-time dropout (pix2pix without --eval) reproducible
    files, aligned = input_files(input_path, dataroot, phase, direction, aligned)
    names = input_names(files)
    stems = output_stems(names)
    count = len(files) if num_test == -1 else min(num_test, len(files))
    cut = f" of {len(files)}" if count < len(files) else ""
    log.info("translating %d%s images%s", count, cut, f" (--num_test {num_test})" if cut else "")
    files, dev = dict(zip(names[:count], files[:count])), resolve_device(device)
    references = reference_files(list(files), list(files.values()), aligned, reference) if reference else None
    lpips_model, protocol = scoring(score, aligned or bool(references), lpips_net, lpips_weights, lpips_backbone,
                                    [image_size(f) for f in files.values()] if score else [], aligned, dev)
    loaded = load(name, checkpoints_dir, epoch, direction, which, weights, model, **arch)
    net, path, family = loaded.net.to(dev), loaded.path, loaded.family
    if family.inference == "none":
        raise GantkError(f"{family.name} has no image-to-image inference (its samples are in the experiment's web/)")
    prep = dict(preprocess=preprocess, load_size=load_size, crop_size=crop_size)
    multiple = size_multiple(net.arch["netG"]) if "netG" in net.arch else 4
    if family.inference == "sample":
        if score:
            raise GantkError(f"--metrics scores one output per input; score {family.name}'s samples with "
                             "gantk eval --diversity")
        if tile:
            raise GantkError(f"--tile is not supported for --model {family.name}")
        prepare_for_inference(apply_kernels(net, kernels), True)  # the BicycleGAN test script always calls eval()
        E = load_encoder(loaded, encoder, **arch)
        E = E.to(dev) if E is not None else None
        items = read_items(files, aligned, direction, prep, net.arch, multiple)
        scores, rows = translate_bicycle(net, E, items, out, n_samples, sync, seed, dev, stems)
        mean = sum(scores.values()) / max(len(scores), 1)
        write_html(out, f"{path.name}: {len(files)} inputs x {n_samples} random z{' (same z for all)' if sync else ''};"
                   f" diversity (mean pairwise L1 of the random samples) {mean:.4f}", rows)
        write_record(out, model=family.name, weights=str(path), encoder=E is not None, images=len(files), seed=seed,
                     n_samples=n_samples, sync=sync, **net.inference,
                     diversity={"metric": DIVERSITY_METRIC, "mean": mean, "per_image": scores})
        return out
    prepare_for_inference(net, not has_batchnorm(net) if eval_mode is None else eval_mode)
    if tile and net.inference["bn_mode"] == "batch":
        raise GantkError("--tile needs BatchNorm running statistics: add --eval")
    if tile:
        tile_size(tile, tile_overlap, multiple)
    apply_kernels(net, kernels)
    mode = "BatchNorm batch statistics" if net.inference["bn_mode"] == "batch" else "eval mode"
    title = f"{path.name}: {len(files)} images ({mode}{', dropout on' if net.inference['dropout'] else ''})"
    scores = {} if score else None
    translate_images(net, read_items(files, aligned, direction, prep, net.arch, multiple, bool(tile), references),
                     out, title, tile or None, tile_overlap, multiple, dev, tile_stats_size, stems, scores, lpips_model)
    targets = {"targets": "A|B pairs" if aligned else os.path.abspath(reference)} if score else {}
    write_record(out, model=family.name, weights=str(path), images=len(files), seed=seed, **net.inference,
                 **({"metrics": {**targets, "protocol": protocol, "mean": mean_scores(scores), "per_image": scores}}
                    if score else {}))
    return out


def scoring(score: bool, has_targets: bool, lpips_net: str, lpips_weights, lpips_backbone, sizes, aligned: bool,
            device) -> tuple[nn.Module | None, dict]:
    """(LPIPS network or None, metrics protocol) for --metrics; one-line errors before any work when there is
    nothing to score against, LPIPS options come without --metrics, or images are too small for LPIPS."""
    from gantk.nn.lpips import NETS, load_lpips, lpips_requested, resolve_lpips_weights
    if not score:
        if lpips_weights or lpips_backbone:
            raise GantkError("--lpips-weights/--lpips-backbone apply to --metrics")
        return None, {}
    if not has_targets:
        raise GantkError("--metrics needs targets: A|B pairs (--dataroot with <phase>/, or --aligned) or "
                         "--reference DIR (images named like the inputs)")
    protocol = {k: metrics.PROTOCOL[k] for k in ("paired_scale", "psnr", "ssim", "mae")}
    if not lpips_requested(lpips_weights, lpips_backbone):
        log.info("LPIPS left out of --metrics: give --lpips-weights and --lpips-backbone to include it")
        return None, protocol
    heads, backbone = resolve_lpips_weights(lpips_weights, lpips_backbone, lpips_net)
    small = [(w // 2 if aligned else w, h) for w, h in sizes if min(w // 2 if aligned else w, h) < NETS[lpips_net].min_size]
    if small:
        raise GantkError(f"--lpips-net {lpips_net} needs images of at least {NETS[lpips_net].min_size} px a side, "
                         f"got {small[0][0]}x{small[0][1]}")
    protocol.update(lpips=metrics.PROTOCOL["lpips"], lpips_net=lpips_net, lpips_version="0.1",
                    lpips_weights=heads, lpips_backbone=backbone)
    return load_lpips(lpips_net, heads, backbone, device), protocol


DIVERSITY_METRIC = "mean pairwise L1 distance between the random samples of one input, images in [-1, 1]"


@torch.no_grad()
def translate_bicycle(G: nn.Module, E: nn.Module | None, items, out: Path, n_samples: int, sync: bool,
                      seed: int, device="cpu", stems: dict[str, str] | None = None) -> tuple[dict[str, float], list]:
    """Per input: the encoded-style output (from the paired target, given an encoder) and n_samples outputs
    for z ~ N(0, I), saved one by one and side by side in images/<stem>_grid.png (`output_stem`). `seed` fixes
    the z; `sync` uses one z list for every input. Returns ({input: diversity (DIVERSITY_METRIC)}, HTML rows)."""
    from gantk.io import image_grid
    from gantk.models.bicyclegan import diversity, encode
    if n_samples < 1:
        raise GantkError(f"--n_samples must be positive, got {n_samples}")
    gen = torch.Generator().manual_seed(seed)
    z_sync = torch.randn(n_samples, G.arch["nz"], generator=gen)
    scores, rows = {}, []
    for name, x, y in items:
        x = x[None].to(device)
        z = z_sync if sync else torch.randn(n_samples, G.arch["nz"], generator=gen)
        with explain_oom(name, "use fewer --n_samples or smaller inputs (--preprocess, --load_size)"):
            samples = G(x.expand(n_samples, -1, -1, -1), z.to(device))
            cells = [("input", x[0])]
            if y is not None:
                y = y[None].to(device)
                cells.append(("ground truth", y[0]))
                if E is not None:
                    cells.append(("encoded", G(x, encode(E, y))[0]))
        cells += [(f"random_sample{i + 1:02d}", s) for i, s in enumerate(samples)]
        scores[name] = diversity(list(samples))
        base = out / "images" / output_stem(name, stems)
        files = [save_image(t, f"{base}_{label.replace(' ', '_')}.png") for label, t in cells]
        save_image(image_grid([[t for _, t in cells]]), f"{base}_grid.png")
        rows.append((f"{name} (diversity {scores[name]:.4f})",
                     [(label, f.relative_to(out).as_posix()) for (label, _), f in zip(cells, files)]))
    return scores, rows
