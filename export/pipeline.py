"""`gantk export`: write the requested artifacts, lint them, and prove parity with the eager model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from gantk.errors import GantkError
from gantk.export.backends import ARTIFACTS, Builder
from gantk.export.parity import ParityReport, check_parity
from gantk.export.runners import load_runner
from gantk.export.spec import ExportSpec
from gantk.runtime import environment

def run_export(spec: ExportSpec, out_dir: str | Path, formats: list[str], photos: list, sizes: list[int],
               opset: int = 17, max_batch: int = 8, min_size: int | None = None, opt_size: int = 256,
               max_size: int = 1024, device: str = "cpu", name: str = "model", log=print) -> dict:
    """Export `spec` to each format under out_dir (the backend registry's builders), check every artifact's
    parity, write manifest.json. Raises GantkError after writing everything when any artifact fails."""
    unknown = [f for f in formats if f not in ARTIFACTS]
    if unknown:
        raise GantkError(f"--format {','.join(unknown)}: expected one or more of {', '.join(ARTIFACTS)}")
    for s in sizes:
        if s % spec.multiple:
            raise GantkError(f"size {s}: must be a multiple of {spec.multiple} for this generator")
    out = Path(out_dir)
    builder = Builder(spec, out, name, opset, max_batch, min_size, opt_size, max_size, device)
    spec.net.to("cpu").float().eval()
    for fmt in formats:
        log(f"--- {fmt}")
        reason = ARTIFACTS[fmt].unavailable(device)
        if reason:
            raise GantkError(f"--format {fmt}: {reason}")
        builder.build(fmt)
    reports: list[ParityReport] = []
    for fmt, path in builder.built.items():
        if fmt == "triton-repo":  # serves a copy of an artifact checked here
            log(f"Triton model repository: {path.parent} (serving {next(path.glob('1/model.*')).name})")
            continue
        where = "cuda" if ARTIFACTS[fmt].device == "cuda" else device
        report = check_parity(spec, load_runner(path, device=where), photos, sizes, ARTIFACTS[fmt].precision)
        log(report.table())
        reports.append(report)
    done = builder.built
    failed = [r for r in reports if not r.passed]
    for r in failed:  # never leave a wrong artifact where a deployment script would pick it up
        p = Path(r.artifact)
        if p.exists():
            shutil.move(p, p.with_name(p.name + ".parity-failed"))
    manifest = {"name": name, "metadata": spec.metadata(), "environment": environment(),
                "artifacts": {k: str(v) for k, v in done.items()}, "parity": [r.to_dict() for r in reports],
                "passed": not failed}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if failed:
        raise GantkError(f"parity FAILED for {', '.join(Path(r.artifact).name for r in failed)} "
                         f"(renamed *.parity-failed; see {out / 'manifest.json'})")
    return manifest
