"""`gantk eval`: score translated images against references.

Paired (`--paired`): each result is matched to one reference image and scored by PSNR, SSIM and MAE
(`gantk.metrics`), per image and as the mean. Two folders are matched by file path without its suffix
(results/a/x.png <-> reference/a/x.jpg); one folder in translate's layout (`images/` holding `<stem>_fake.png`
and `<stem>_target.png`, pix2pix test pairs) is matched `_fake` to `_target`.
Unpaired: FID and KID between the two folders' Inception features (weights required).
Every check (folders, pairs, image sizes, weights, --out) runs before any image is scored.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image

from gantk import metrics
from gantk.errors import GantkError
from gantk.io import check_writable, list_images, load_image, pil_to_tensor

FAKE, TARGET = "_fake", "_target"


def _listing(folder: str | Path, option: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise GantkError(f"{option} {folder}: no such folder")
    files = list_images(folder)
    if not files:
        raise GantkError(f"{option} {folder}: no image files in it")
    return files


def _keyed(files: list[Path], root: Path, option: str) -> dict[str, Path]:
    """{relative path without suffix: file}; two files sharing one (x.png, x.jpg) are an error."""
    keyed: dict[str, Path] = {}
    for f in files:
        key = PurePosixPath(f.relative_to(root).as_posix()).with_suffix("").as_posix()
        if key in keyed:
            raise GantkError(f"{option} {root}: {keyed[key].name} and {f.name} would both match {key}; keep one")
        keyed[key] = f
    return keyed


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def pair_files(results: str | Path, reference: str | Path | None = None) -> list[tuple[str, Path, Path]]:
    """(name, result file, reference file) pairs, sorted by name; every result must have its reference
    (extra references are ignored) and both images of a pair the same size, else a one-line GantkError."""
    results = Path(results)
    res = _keyed(_listing(results, "--results"), results, "--results")
    if one_folder(results, reference):
        fakes = {k[: -len(FAKE)]: f for k, f in res.items() if k.endswith(FAKE)}
        if not fakes:
            raise GantkError(f"--results {results}: no <stem>{FAKE} images (translate's images/ folder); "
                             f"give --reference DIR to match files by name")
        ref = {k[: -len(TARGET)]: f for k, f in res.items() if k.endswith(TARGET)}
        res, where = fakes, f"<stem>{TARGET} in --results {results}"
    else:
        ref = _keyed(_listing(reference, "--reference"), Path(reference), "--reference")
        where = f"--reference {reference}"
    missing = sorted(k for k in res if k not in ref)
    if missing:
        raise GantkError(f"{len(missing)} of {len(res)} results have no match in {where}: {_few(missing)}")
    pairs = [(k, res[k], ref[k]) for k in sorted(res)]
    for name, a, b in pairs:
        sa, sb = _size(a), _size(b)
        if sa != sb:
            raise GantkError(f"{name}: result {a.name} is {sa[0]}x{sa[1]} px but reference {b.name} is "
                             f"{sb[0]}x{sb[1]} px; paired metrics need equal sizes")
    return pairs


def one_folder(results, reference) -> bool:
    """Whether pairs come from one folder in translate's layout (`_fake` <-> `_target`)."""
    return reference is None or Path(reference).resolve() == Path(results).resolve()


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header (load_image reports unreadable files)."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        load_image(path)  # raises the one-line DataError
        raise


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(load_image(path, "RGB"))


def evaluate_paired(pairs: list[tuple[str, Path, Path]], log: Callable[[str], None] = print) -> dict:
    """PSNR (dB), SSIM and MAE (0..255) per pair and their means."""
    rows = []
    for i, (name, a, b) in enumerate(pairs, 1):
        x, y = _rgb(a), _rgb(b)
        rows.append({"name": name, "result": str(a), "reference": str(b),
                     "psnr": metrics.psnr(x, y), "ssim": metrics.ssim(x, y), "mae": metrics.mae(x, y)})
        log(f"[{i}/{len(pairs)}] {name}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "mae")}
    return {"per_image": rows, "mean": mean}


def _tensors(files: list[Path]):
    return (pil_to_tensor(load_image(f, "RGB")) for f in files)


def evaluate_unpaired(res_files: list[Path], ref_files: list[Path], extractor: metrics.FeatureExtractor,
                      device="cpu", batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      seed: int = 0) -> dict:
    """FID and KID (mean, std) between two image lists, features from `extractor`."""
    f1 = metrics.extract_features(extractor, _tensors(res_files), batch_size, device)
    f2 = metrics.extract_features(extractor, _tensors(ref_files), batch_size, device)
    kid_mean, kid_std = metrics.kid(f1, f2, kid_subsets, kid_subset_size, seed=seed)
    return {"fid": metrics.fid_from_features(f1, f2), "kid": {"mean": kid_mean, "std": kid_std}}


def run_eval(results, reference=None, paired: bool = False, out=None, inception_weights: str | None = None,
             batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
             device: str = "auto", log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Check everything, score, write the JSON record (`out`, default <results>/eval.json); (record, path)."""
    from gantk.nn.inception import load_fid_inception, resolve_inception_weights
    from gantk.runtime import resolve_device
    out = check_writable(out or Path(results) / "eval.json", "--out")
    for option, value, low in (("--batch-size", batch_size, 1), ("--kid-subsets", kid_subsets, 1),
                               ("--kid-subset-size", kid_subset_size, 2)):
        if value < low:
            raise GantkError(f"{option} must be >= {low}, got {value}")
    protocol = {k: metrics.PROTOCOL[k] for k in (("paired_scale", "psnr", "ssim", "mae") if paired
                                                 else ("features", "fid", "kid"))}
    doc = {"mode": "paired" if paired else "unpaired", "results": os.path.abspath(results),
           "reference": reference and os.path.abspath(reference)}
    if paired:
        pairs = pair_files(results, reference)
        protocol.update(images=len(pairs), pairing=f"<stem>{FAKE} <-> <stem>{TARGET}" if one_folder(results, reference)
                        else "relative path without suffix")
        doc.update(evaluate_paired(pairs, log))
    else:
        res_files = _listing(results, "--results")
        if reference is None:
            raise GantkError("FID/KID compare two sets: give --reference DIR (or --paired for PSNR/SSIM/MAE)")
        ref_files = _listing(reference, "--reference")
        size = metrics.kid_subset_size(len(res_files), len(ref_files), kid_subset_size)
        weights = resolve_inception_weights(inception_weights)
        dev = resolve_device(device)
        protocol.update(images={"results": len(res_files), "reference": len(ref_files)},
                        weights=weights if weights == "random" else os.path.abspath(weights),
                        kid_subsets=kid_subsets, kid_subset_size=size, kid_seed=seed)
        if min(len(res_files), len(ref_files)) < 2048:
            log(f"note: FID from fewer than 2048 images per set ({len(res_files)}, {len(ref_files)}) is biased "
                f"upwards; compare only numbers with the same image counts")
        doc.update(evaluate_unpaired(res_files, ref_files, load_fid_inception(weights, dev), dev, batch_size,
                                     kid_subsets, size, seed))
    doc["protocol"] = protocol
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc, out


def format_table(doc: dict) -> str:
    """The record as a text table: one row per image and the mean (paired), or FID and KID."""
    if doc["mode"] == "unpaired":
        n = doc["protocol"]["images"]
        return (f"FID {doc['fid']:.4f}   KID {doc['kid']['mean']:.6f} +- {doc['kid']['std']:.6f}   "
                f"({n['results']} results, {n['reference']} references, "
                f"{doc['protocol']['kid_subsets']} KID subsets of {doc['protocol']['kid_subset_size']})")
    width = max(len("mean"), *(len(r["name"]) for r in doc["per_image"]))
    lines = [f"{'image':<{width}}  {'PSNR dB':>8}  {'SSIM':>7}  {'MAE':>7}"]
    for r in [*doc["per_image"], {"name": "mean", **doc["mean"]}]:
        lines.append(f"{r['name']:<{width}}  {r['psnr']:>8.3f}  {r['ssim']:>7.4f}  {r['mae']:>7.3f}")
    return "\n".join(lines)
