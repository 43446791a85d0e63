"""`gantk export`: write the requested artifacts, lint them, prove parity with the eager model, and swap the
folder in whole; `gantk export --verify` re-checks a folder.

An export folder holds one model's consistent set: everything is built in a sibling `<out>.tmp-<pid>`,
checked there, and renamed into place only when every artifact passes parity, so a failing export never
touches the previous folder. manifest.json lists every file beside it (relative paths, SHA-256, size).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

from gantk.checkpoints import sha256_file
from gantk.errors import GantkError
from gantk.export.backends import ARTIFACTS, Builder
from gantk.export.parity import FP16_ARITHMETIC, THRESHOLDS, ParityReport, Quality, check_parity, load_photos
from gantk.export.runners import load_runner
from gantk.export.spec import ExportSpec, load_spec
from gantk.runtime import environment

MANIFEST = "manifest.json"


def check_out(out: str | Path) -> Path:
    """`out` as an absolute path, or a one-line GantkError unless it can be written: a new path under a
    writable folder, or a writable folder that is empty or holds a gantk export (it will be replaced)."""
    path = Path(out).resolve()
    if path.exists():
        if not path.is_dir():
            raise GantkError(f"--out {out}: is a file, not a folder")
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise GantkError(f"--out {out}: folder is not writable")
        if not (path / MANIFEST).is_file() and any(path.iterdir()):
            raise GantkError(f"--out {out}: holds files that are not a gantk export (no {MANIFEST}); "
                             "give a new or empty folder")
    base = next(p for p in path.parents if p.exists())  # where the folder and its temporary sibling go
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise GantkError(f"--out {out}: cannot create folders in {base}")
    return path


def check_request(out: str | Path | None, formats: list[str], sizes: list[int] | None, max_batch: int,
                  opt_size: int, max_size: int, multiple: int = 1) -> None:
    """A one-line GantkError for any option that cannot give a working export, before any work
    (sizes None: not chosen yet; out None: not known yet)."""
    unknown = [f for f in formats if f not in ARTIFACTS]
    if unknown or not formats:
        raise GantkError(f"--format {','.join(unknown)}: expected one or more of {', '.join(ARTIFACTS)}")
    for s in sizes or []:
        if s <= 0 or s % multiple:
            need = "positive" if s <= 0 else f"a multiple of {multiple} px for this generator"
            raise GantkError(f"--parity_sizes {s}: must be {need}")
    if sizes == []:
        raise GantkError("--parity_sizes: give at least one size")
    if max_batch < 1:
        raise GantkError(f"--max_batch {max_batch}: must be at least 1")
    if opt_size < 1:
        raise GantkError(f"--opt_size {opt_size}: must be positive")
    if max_size < max([1, *(sizes or [])]):
        raise GantkError(f"--max_size {max_size}: must be positive and at least the largest parity size")
    if out is not None:
        check_out(out)


def _files(folder: Path) -> dict:
    """{relative path: {sha256, size}} of every file under folder except the manifest."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p != folder / MANIFEST}


def _parity(spec: ExportSpec, folder: Path, fmt: str, artifact: str, photos: list, sizes: list[int],
            device: str, quality: Quality | None = None) -> ParityReport:
    """Parity of `folder/artifact` (a `fmt` artifact), its path recorded relative to the folder."""
    where = "cuda" if ARTIFACTS[fmt].device == "cuda" else device
    report = check_parity(spec, load_runner(folder / artifact, device=where), photos, sizes, ARTIFACTS[fmt].precision,
                          quality)
    report.artifact = artifact
    return report


def _shortfall(report: ParityReport) -> str:
    """`<artifact> [precision: worst error vs its limit]` for a failed report (`[LPIPS 0.002 (gate 0)]` when only
    its --quality_gate failed)."""
    if report.parity_passed:
        return f"{report.artifact} [{', '.join(report.gate_misses())}]"
    t = THRESHOLDS[report.precision]
    # every graded figure of a row: the artifact's, and for fp16 on ONNX Runtime's CPU provider the real fp16 one
    rows = [g for r in report.rows for g in (r, r.get(FP16_ARITHMETIC)) if g]
    worst = ([f"max |err| {max(r['max_abs'] for r in rows):.3g} (limit {t['max_abs']:g})"] if "max_abs" in t else []) \
        + ([f"PSNR {min(r['psnr'] for r in rows):.1f} dB (limit {t['psnr']:g} dB)"] if "psnr" in t else [])
    return f"{report.artifact} [{report.precision}: {', '.join(worst + report.gate_misses())}]"


def _failure(failed: list[ParityReport]) -> str:
    """`parity FAILED for ...` (or `quality gate FAILED for ...` when every artifact passed parity)."""
    what = "quality gate" if all(r.parity_passed for r in failed) else "parity"
    return f"{what} FAILED for {'; '.join(map(_shortfall, failed))}"


def _dead(folder: Path, tag: str) -> bool:
    """Whether `folder` is named `<out>.<tag>-<pid>` by a process that no longer runs."""
    pid = folder.name.rpartition(f".{tag}-")[2]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def recover(out: str | Path, log=print) -> None:
    """Undo what an export killed mid-way left beside `out`: a folder renamed aside before the new one
    went in goes back (when `out` is missing) or is deleted (when the new one is in); stale builds go."""
    out = Path(out).resolve()
    for old in sorted(out.parent.glob(f"{glob.escape(out.name)}.old-*")):
        if not _dead(old, "old"):
            continue
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(out)
            log(f"{out}: put back the export that a killed export had moved aside to {old.name}")
    for tmp in out.parent.glob(f"{glob.escape(out.name)}.tmp-*"):
        if _dead(tmp, "tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, out: Path) -> None:
    """Put `new` at `out`: the old folder is renamed aside, the new one renamed in, then the old deleted
    (rename is atomic on one file system; if the second rename fails, the old folder goes back)."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run_export(spec: ExportSpec, out_dir: str | Path, formats: list[str], photos: list, sizes: list[int],
               opset: int = 17, max_batch: int = 8, min_size: int | None = None, opt_size: int = 256,
               max_size: int = 1024, device: str = "cpu", name: str = "model", source: dict | None = None,
               log=print, quality: Quality | None = None) -> dict:
    """Export `spec` to each format (the backend registry's builders) in `<out>.tmp-<pid>`, check every
    artifact's parity there, write manifest.json, then replace out_dir's content with it. max_size and
    opt_size are rounded down to the size multiple (opt_size at most max_size). `source` (how to load the
    generator again: {"generator": load_spec's arguments, "parity_images": ...}) is recorded for `verify_export`.
    `quality` adds LPIPS / FID change to every parity record and its --quality_gate to the pass.
    When any artifact fails parity (or the gate), out_dir stays as it was, the failed build is kept (manifest passed=false)
    in `<out>.parity-failed/` and a one-line GantkError names the artifacts and their limits."""
    m = spec.multiple
    check_request(None, formats, sizes, max_batch, opt_size, max_size, m)
    for fmt in formats:
        reason = ARTIFACTS[fmt].unavailable(device)
        if reason:
            raise GantkError(f"--format {fmt}: {reason}")
    recover(out_dir, log)
    out = check_out(out_dir)
    max_size = max_size // m * m
    opt_size = min(max(m, opt_size // m * m), max_size)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cache = out / f"{name}.timing.cache"  # TensorRT's timing cache depends on the GPU only: keep it
        if cache.is_file():
            shutil.copyfile(cache, tmp / cache.name)
        builder = Builder(spec, tmp, name, opset, max_batch, min_size, opt_size, max_size, device)
        spec.net.to("cpu").float().eval()
        for fmt in formats:
            log(f"--- {fmt}")
            builder.build(fmt)
        artifacts = {fmt: path.relative_to(tmp).as_posix() for fmt, path in builder.built.items()}
        reports: dict[str, ParityReport] = {}
        for fmt, rel in artifacts.items():
            if fmt == "triton-repo":  # serves a copy of an artifact checked here
                log(f"Triton model repository: {rel} (serving {next((tmp / rel).glob('1/model.*')).name})")
                continue
            reports[fmt] = _parity(spec, tmp, fmt, rel, photos, sizes, device, quality)
            log(reports[fmt].table())
        failed = [r for r in reports.values() if not r.passed]
        manifest = {"name": name, "metadata": spec.metadata(), "environment": environment(),
                    "source": source, "parity_sizes": sizes, "device": device, "artifacts": artifacts,
                    "parity": [{"format": fmt, **r.to_dict()} for fmt, r in reports.items()],
                    "quality": quality.record if quality else {}, "passed": not failed, "files": _files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if failed:
            kept = out.with_name(f"{out.name}.parity-failed")
            shutil.rmtree(kept, ignore_errors=True)
            tmp.rename(kept)
            raise GantkError(f"{_failure(failed)}: {out} is unchanged, the failed build is in {kept}")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def verify_export(folder: str | Path, photos: list | None = None, spec: ExportSpec | None = None, log=print) -> dict:
    """Re-check an export folder: every file in its manifest present with the recorded SHA-256, then parity
    of every artifact with a parity record against the eager generator (`spec`, else loaded again from the
    manifest's source) on `photos` (else the manifest's parity images). Returns the manifest with the new
    parity records; raises a one-line GantkError naming the first problem."""
    recover(folder, log)
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise GantkError(f"{folder}: no {MANIFEST} (not a gantk export folder)")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except ValueError as e:
        raise GantkError(f"{folder / MANIFEST}: not readable JSON ({e})") from None
    if "files" not in manifest:
        raise GantkError(f"{folder / MANIFEST}: no file checksums (written by an older gantk); export again")
    for rel, want in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise GantkError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != want["sha256"]:
            raise GantkError(f"{path}: SHA-256 differs from {MANIFEST} (changed since export)")
    log(f"{folder}: {len(manifest['files'])} files match {MANIFEST}")
    source = manifest.get("source") or {}
    if spec is None:
        if "generator" not in source:
            raise GantkError(f"{folder / MANIFEST}: no source record to reload the generator from; export again")
        spec, _ = load_spec(**source["generator"])
    photos = photos or load_photos(source.get("parity_images"))
    spec.net.to("cpu").float().eval()
    reports = [_parity(spec, folder, rec["format"], rec["artifact"], photos, manifest["parity_sizes"],
                       manifest.get("device", "cpu")) for rec in manifest["parity"]]
    for r in reports:
        log(r.table())
    failed = [r for r in reports if not r.passed]
    if failed:
        raise GantkError(f"{_failure(failed)} in {folder}")
    return {**manifest, "parity": [{"format": rec["format"], **r.to_dict()} for rec, r in zip(manifest["parity"], reports)]}
