"""`gantk eval`: score translated images against references.

Paired (`--paired`): each result is matched to one reference image and scored by PSNR, SSIM and MAE
(`gantk.metrics`), and LPIPS when its weights are given, per image and as the mean. Two folders are matched by
file path without its suffix (results/a/x.png <-> reference/a/x.jpg); one folder in translate's layout
(`images/` holding `<stem>_fake.png` and `<stem>_target.png`, pix2pix test pairs) is matched `_fake` to `_target`.
Unpaired: FID and KID between the two folders' Inception features (weights required), images resized by
clean-fid's protocol (or pytorch-fid's); each folder's features are cached, keyed by its files' contents and
the protocol, so a fixed reference set is computed once.
Diversity (`--diversity`): BicycleGAN samples from translate (`<stem>_random_sample01..K`), grouped by input:
LPIPS over consecutive samples (the BicycleGAN README's protocol) when its weights are given, and translate's L1.
Every check (folders, pairs, image sizes, weights, --out) runs before any image is scored.
"""
from __future__ import annotations

import hashlib
import io
import glob
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image

from gantk import metrics
from gantk.checkpoints import save_files, sha256_file
from gantk.errors import GantkError
from gantk.io import check_writable, list_images, load_image, pil_to_tensor
from gantk.nn.weights import weights_record

FAKE, TARGET, REAL = "_fake", "_target", "_real"
SAMPLE = re.compile(r"^(?P<stem>.+)_random_sample(?P<index>\d+)$")  # translate's BicycleGAN outputs
BICYCLE_SAMPLES = 20  # the BicycleGAN README's samples per input


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


def baseline_pairs(pairs: list[tuple[str, Path, Path]]) -> list[tuple[str, Path, Path]]:
    """(name, <stem>_real, <stem>_target) for each (name, <stem>_fake, <stem>_target) pair: translate's input
    scored as if it were the translation (the identity baseline); a one-line GantkError when one is missing."""
    out = []
    for name, fake, target in pairs:
        real = next(iter(sorted(fake.parent.glob(f"{glob.escape(fake.stem[: -len(FAKE)])}{REAL}.*"))), None)
        if real is None:
            raise GantkError(f"--baseline: no {fake.stem[: -len(FAKE)]}{REAL} image (translate's input) beside "
                             f"{fake}")
        if _size(real) != _size(target):
            raise GantkError(f"--baseline: {real.name} and {target.name} differ in size")
        out.append((name, real, target))
    return out


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


def evaluate_paired(pairs: list[tuple[str, Path, Path]], log: Callable[[str], None] = print,
                    lpips_net: metrics.Distance | None = None) -> dict:
    """PSNR (dB), SSIM and MAE (0..255) per pair and their means; LPIPS too when `lpips_net` is given."""
    rows = []
    for i, (name, a, b) in enumerate(pairs, 1):
        x, y = _rgb(a), _rgb(b)
        rows.append({"name": name, "result": str(a), "reference": str(b),
                     "psnr": metrics.psnr(x, y), "ssim": metrics.ssim(x, y), "mae": metrics.mae(x, y)})
        if lpips_net is not None:
            rows[-1]["lpips"] = metrics.lpips(lpips_net, x, y)
        log(f"[{i}/{len(pairs)}] {name}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("name", "result", "reference")}
    return {"per_image": rows, "mean": mean}


def sample_groups(results: str | Path) -> dict[str, list[Path]]:
    """{input stem: its random samples in sample order} from translate's BicycleGAN outputs
    (`<stem>_random_sample01.png` ...); every input needs the same number (>= 2) of equal-size samples."""
    results = Path(results)
    groups: dict[str, dict[int, Path]] = {}
    for key, f in _keyed(_listing(results, "--results"), results, "--results").items():
        m = SAMPLE.match(key)
        if m:
            groups.setdefault(m["stem"], {})[int(m["index"])] = f
    if not groups:
        raise GantkError(f"--results {results}: no <stem>_random_sampleNN images (gantk translate of a BicycleGAN)")
    counts = {stem: len(g) for stem, g in groups.items()}
    k = max(counts.values())
    short = sorted(stem for stem, n in counts.items() if n != k or n < 2)
    if short:
        raise GantkError(f"--results {results}: every input needs the same number (>= 2) of random samples; "
                         f"{_few(short)} {'has' if len(short) == 1 else 'have'} {counts[short[0]]}, others {k}")
    for stem, g in groups.items():
        sizes = {_size(f) for f in g.values()}
        if len(sizes) > 1:
            raise GantkError(f"--results {results}: the samples of {stem} differ in size: {sorted(sizes)}")
    return {stem: [groups[stem][i] for i in sorted(groups[stem])] for stem in sorted(groups)}


def evaluate_diversity(groups: dict[str, list[Path]], log: Callable[[str], None] = print,
                       lpips_net: metrics.Distance | None = None) -> dict:
    """Per input: LPIPS over consecutive samples (when `lpips_net` is given) and translate's L1 diversity
    (all pairs); means over inputs."""
    from gantk.models.bicyclegan import diversity
    rows = []
    for i, (stem, files) in enumerate(groups.items(), 1):
        samples = list(_tensors(files))
        rows.append({"name": stem, "samples": len(files), "l1": diversity(samples)})
        if lpips_net is not None:
            rows[-1]["lpips"] = metrics.lpips_diversity(lpips_net, [samples])[0]
        log(f"[{i}/{len(groups)}] {stem}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("name", "samples")}
    return {"per_input": rows, "mean": mean}


def _lpips(net: str, heads: str | None, backbone: str | None, sizes, dev, log, protocol=("lpips",)
           ) -> tuple[metrics.Distance | None, dict]:
    """(LPIPS network or None, its protocol entries: `protocol` from metrics.PROTOCOL, net and files); None with
    a note when no weights were asked for. Weights and image sizes are checked before anything is loaded."""
    from gantk.nn.lpips import NETS, load_lpips, lpips_requested, resolve_lpips_weights
    if not lpips_requested(heads, backbone):
        log("note: LPIPS left out: give --lpips-weights (the published v0.1 heads) and --lpips-backbone "
            "(torchvision's weights) to include it")
        return None, {}
    heads, backbone = resolve_lpips_weights(heads, backbone, net)
    small = [f"{w}x{h}" for w, h in sizes if min(w, h) < NETS[net].min_size]
    if small:
        raise GantkError(f"--lpips-net {net} needs images of at least {NETS[net].min_size} px a side, got "
                         f"{small[0]}")
    return load_lpips(net, heads, backbone, dev), {**{k: metrics.PROTOCOL[k] for k in protocol}, "lpips_net": net,
                                                   "lpips_version": "0.1", "lpips_weights": weights_record(heads),
                                                   "lpips_backbone": weights_record(backbone)}


def _tensors(files: list[Path]):
    return (pil_to_tensor(load_image(f, "RGB")) for f in files)


def default_cache_dir() -> Path:
    """Where FID features are cached: $XDG_CACHE_HOME/gantk/fid, else ~/.cache/gantk/fid."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gantk" / "fid"


def features_key(files: list[Path], root: Path, protocol: dict) -> str:
    """SHA-256 of a folder's sorted relative names with each file's SHA-256, and of the feature protocol:
    any changed, added, removed or renamed file, or another protocol, gives another key."""
    h = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode())
    for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        h.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def folder_features(files: list[Path], root: Path, extractor: metrics.FeatureExtractor, resize: str,
                    key_protocol: dict, cache: Path | None, batch_size: int = 32, device="cpu",
                    log: Callable[[str], None] = print) -> tuple[np.ndarray, str]:
    """(N, 2048) FID features of the image files below `root`, and where they came from ("computed", or
    "cache" when `cache` holds them for these exact files and `key_protocol`). New ones are written there
    atomically (temp file + rename); an unreadable cache file is computed again."""
    path = cache / f"{features_key(files, root, key_protocol)}.npy" if cache else None
    if path is not None and path.is_file():
        try:
            feats = np.load(path)
            if feats.shape[0] == len(files):
                log(f"features of {root}: from the cache ({path})")
                return feats, "cache"
        except (OSError, ValueError):
            pass
        log(f"note: unreadable cache file {path}; computing the features again")
    log(f"features of {root}: {len(files)} images through the Inception ({resize} resize)")
    images = (metrics.fid_input(_rgb(f), resize) for f in files)
    feats = metrics.extract_features(extractor, images, batch_size, device).astype(np.float32)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, feats)
        save_files({path: buf.getvalue()}, checksum=False)
    return feats, "computed"


def evaluate_unpaired(res_files: list[Path], ref_files: list[Path], extractor: metrics.FeatureExtractor,
                      device="cpu", batch_size: int = 32, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      seed: int = 0, resize: str = "clean", roots: tuple[Path, Path] | None = None,
                      key_protocol: dict | None = None, cache: Path | None = None,
                      log: Callable[[str], None] = print) -> dict:
    """FID and KID (mean, std) between two image lists below `roots` (default: their folders), features from
    `extractor` on `fid_input(image, resize)`, each set's features cached in `cache` (None: not cached)."""
    roots = roots or (res_files[0].parent, ref_files[0].parent)
    (f1, src1), (f2, src2) = (folder_features(files, root, extractor, resize, key_protocol or {}, cache,
                                              batch_size, device, log)
                              for files, root in zip((res_files, ref_files), roots))
    kid_mean, kid_std = metrics.kid(f1, f2, kid_subsets, kid_subset_size, seed=seed)
    return {"fid": metrics.fid_from_features(f1, f2), "kid": {"mean": kid_mean, "std": kid_std},
            "features_from": {"results": src1, "reference": src2}}


def run_eval(results, reference=None, paired: bool = False, diversity: bool = False, out=None,
             inception_weights: str | None = None, lpips_net: str = "alex", lpips_weights: str | None = None,
             lpips_backbone: str | None = None, batch_size: int = 32, kid_subsets: int = 100,
             kid_subset_size: int = 1000, seed: int = 0, device: str = "auto", fid_resize: str = "clean",
             fid_backend: str = "auto", cache_dir: str | None = None, no_cache: bool = False,
             baseline: bool = False, log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Check everything, score, write the JSON record (`out`, default <results>/eval.json); (record, path)."""
    from gantk.nn.inception import (feature_extractor, load_fid_inception, openvino_ir_path, resolve_backend,
                                    resolve_inception_weights)
    from gantk.runtime import resolve_device
    out = check_writable(out or Path(results) / "eval.json", "--out")
    for option, value, low in (("--batch-size", batch_size, 1), ("--kid-subsets", kid_subsets, 1),
                               ("--kid-subset-size", kid_subset_size, 2)):
        if value < low:
            raise GantkError(f"{option} must be >= {low}, got {value}")
    if baseline and not (paired and one_folder(results, reference)):
        raise GantkError("--baseline scores translate's inputs (<stem>_real) in one --results folder: use it with "
                         "--paired and without --reference")
    if diversity and (paired or reference is not None):
        raise GantkError("--diversity scores one folder of BicycleGAN samples: drop --paired and --reference")
    if not (paired or diversity) and (lpips_weights or lpips_backbone):
        raise GantkError("--lpips-weights/--lpips-backbone apply to --paired and --diversity, not to FID/KID")
    if fid_resize not in metrics.FID_RESIZE:
        raise GantkError(f"--fid-resize must be one of {', '.join(metrics.FID_RESIZE)}, got {fid_resize!r}")
    mode = "diversity" if diversity else "paired" if paired else "unpaired"
    protocol = {k: metrics.PROTOCOL[k] for k in {"paired": ("paired_scale", "psnr", "ssim", "mae"),
                                                 "unpaired": (f"fid_resize_{fid_resize}", "fid", "kid"),
                                                 "diversity": ("diversity_l1",)}[mode]}
    doc = {"mode": mode, "results": os.path.abspath(results), "reference": reference and os.path.abspath(reference)}
    if paired or diversity:
        if paired:
            pairs = pair_files(results, reference)
            files = [a for _, a, _ in pairs]
            protocol.update(images=len(pairs), pairing=f"<stem>{FAKE} <-> <stem>{TARGET}"
                            if one_folder(results, reference) else "relative path without suffix")
            inputs = baseline_pairs(pairs) if baseline else []
            if baseline:
                protocol["baseline"] = (f"identity: each <stem>{REAL} (translate's input) scored against "
                                        f"<stem>{TARGET} as if it were the translation")
        else:
            groups = sample_groups(results)
            files = [f for g in groups.values() for f in g]
            k = len(next(iter(groups.values())))
            protocol.update(inputs=len(groups), samples_per_input=k, lpips_pairs_per_input=k - 1,
                            grouping="<stem>_random_sampleNN by <stem>, in NN order")
            if k != BICYCLE_SAMPLES:
                log(f"note: {k} samples per input; the BicycleGAN README's protocol uses {BICYCLE_SAMPLES} "
                    f"(gantk translate --n_samples {BICYCLE_SAMPLES})")
        net, entries = _lpips(lpips_net, lpips_weights, lpips_backbone, {_size(f) for f in files},
                              resolve_device(device), log, ("lpips", "lpips_diversity") if diversity else ("lpips",))
        protocol.update(entries)
        doc.update(evaluate_paired(pairs, log, net) if paired else evaluate_diversity(groups, log, net))
        if paired and baseline:
            doc["baseline"] = evaluate_paired(inputs, log, net)
    else:
        res_files = _listing(results, "--results")
        fakes = [f for f in res_files if f.stem.endswith(FAKE)]
        if fakes and len(fakes) < len(res_files):  # translate's images/: its inputs and targets are no results
            log(f"note: scoring the {len(fakes)} <stem>{FAKE} images of --results (translate's outputs), not the "
                f"{len(res_files) - len(fakes)} inputs/targets beside them")
            res_files = fakes
        if reference is None:
            raise GantkError("FID/KID compare two sets: give --reference DIR (or --paired for PSNR/SSIM/MAE)")
        ref_files = _listing(reference, "--reference")
        size = metrics.kid_subset_size(len(res_files), len(ref_files), kid_subset_size)
        weights = resolve_inception_weights(inception_weights)
        dev = resolve_device(device)
        backend = resolve_backend(fid_backend, dev)
        cache = None if no_cache else check_writable(cache_dir or default_cache_dir(), "--cache-dir", folder=True)
        digest = "random" if weights == "random" else sha256_file(weights)
        key_protocol = {"resize": fid_resize, "weights_sha256": digest, "backend": backend}
        protocol.update(fid_resize=fid_resize, images={"results": len(res_files), "reference": len(ref_files)},
                        weights=weights_record(weights), weights_file=Path(weights).name, weights_sha256=digest[:8],
                        fid_backend=backend, kid_subsets=kid_subsets, kid_subset_size=size, kid_seed=seed)
        if min(len(res_files), len(ref_files)) < 2048:
            log(f"note: FID from fewer than 2048 images per set ({len(res_files)}, {len(ref_files)}) is biased "
                f"upwards; compare only numbers with the same image counts")
        net = load_fid_inception(weights, dev)
        ir = openvino_ir_path(cache, digest) if cache and backend == "openvino" else None
        doc.update(evaluate_unpaired(res_files, ref_files, feature_extractor(net, backend, ir), dev, batch_size,
                                     kid_subsets, size, seed, fid_resize, (Path(results), Path(reference)),
                                     key_protocol, cache, log))
    doc["protocol"] = protocol
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc, out


def format_table(doc: dict) -> str:
    """The record as a text table: one row per image (paired) or input (diversity) and the mean, or FID and KID."""
    if doc["mode"] == "unpaired":
        n = doc["protocol"]["images"]
        return (f"FID {doc['fid']:.4f}   KID {doc['kid']['mean']:.6f} +- {doc['kid']['std']:.6f}   "
                f"({doc['protocol']['fid_resize']} resize, {n['results']} results, {n['reference']} references, "
                f"{doc['protocol']['kid_subsets']} KID subsets of {doc['protocol']['kid_subset_size']})")
    rows = doc["per_image" if doc["mode"] == "paired" else "per_input"]
    columns = [(k, label, fmt) for k, label, fmt in (
        ("psnr", "PSNR dB", ".3f"), ("ssim", "SSIM", ".4f"), ("mae", "MAE", ".3f"),
        ("lpips", "LPIPS", ".4f"), ("l1", "L1", ".4f")) if k in doc["mean"]]
    if doc["mode"] == "diversity":
        columns[0:0] = [("samples", "samples", "d")]
    baseline = [{"name": "baseline", **doc["baseline"]["mean"]}] if "baseline" in doc else []
    width = max(len("mean"), *(len(r["name"]) for r in rows + baseline))
    lines = [f"{'image' if doc['mode'] == 'paired' else 'input':<{width}}"
             + "".join(f"  {label:>8}" for _, label, _ in columns)]
    for r in [*rows, {"name": "mean", **doc["mean"]}, *baseline]:
        lines.append(f"{r['name']:<{width}}" + "".join(f"  {r[k]:>8{fmt}}" if k in r else f"  {'':>8}"
                                                       for k, _, fmt in columns))
    return "\n".join(lines)
