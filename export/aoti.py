"""AOTInductor packages (`.pt2`): torch.export with dynamic batch/height/width, compiled ahead of time
for CPU or CUDA, runnable from Python (`AotiRunner`) or C++ (export/cpp, libtorch's package loader)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from gantk.errors import GantkError
from gantk.export.runners import Runner, read_sidecar, sidecar
from gantk.export.spec import ExportSpec, on_device


def export_aoti(spec: ExportSpec, path: str | Path, max_batch: int = 16, max_size: int = 1024,
                device: str = "cpu", min_size: int | None = None) -> Path:
    """Compile `spec.net` into an AOTInductor package accepting 1..max_batch images of any multiple of
    spec.multiple from min_size (default: spec.multiple) up to max_size px.

    torch.export specialises sizes 0/1, so the batch-2 example gives a batch symbol whose compiled range
    starts at 2, and with AOTI_RUNTIME_CHECK_INPUTS=1 the package would refuse batch 1 (what the C++ app and
    translate_file send). Inductor's generated lower-bound checks are therefore off (its documented switch
    for this case); the upper bounds (max_batch, max_size) stay checked, and AotiRunner checks the whole
    declared range, min_size included, from the sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = spec.multiple
    min_size = min_size or m
    if max_size < max(2 * m, min_size):
        raise GantkError(f"--max_size {max_size}: must be at least {max(2 * m, min_size)} for this generator")
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    h = torch.export.Dim("h", min=min_size // m, max=max_size // m)
    w = torch.export.Dim("w", min=min_size // m, max=max_size // m)
    dev = torch.device(device)
    inputs = tuple(t.to(dev) for t in spec.example_inputs(batch=2, size=max(2 * m, min_size)))
    shapes = ({0: batch, 2: m * h, 3: m * w},) + (({0: batch},) if spec.nz else ())
    with warnings.catch_warnings(), torch.no_grad(), on_device(spec.net, dev) as net:
        warnings.simplefilter("ignore")
        program = torch.export.export(net, inputs, dynamic_shapes=shapes)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={"aot_inductor.check_lowerbound": False})
    meta = {**spec.metadata(), "device": dev.type, "max_batch": max_batch, "min_size": min_size,
            "max_size": max_size}
    sidecar(path).write_text(json.dumps(meta, indent=1))
    return path


class AotiRunner(Runner):
    backend = "aotinductor"

    def __init__(self, path: str | Path, device: str = "cpu"):
        super().__init__(path, read_sidecar(path))
        self.device = torch.device(self.metadata.get("device", device))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = torch._inductor.aoti_load_package(str(path))
        except Exception as e:
            raise GantkError(f"{path}: not a loadable AOTInductor package ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def check(self, x: torch.Tensor) -> None:
        """A one-line GantkError for an input outside the compiled range (batch, height, width)."""
        meta = self.metadata
        lo, hi = meta.get("min_size", 1), meta.get("max_size", float("inf"))
        if x.shape[0] > meta.get("max_batch", float("inf")) or not all(lo <= s <= hi for s in x.shape[2:]):
            raise GantkError(f"{self.path}: input {'x'.join(map(str, x.shape))} is outside the compiled range "
                             f"(batch 1..{meta.get('max_batch')}, {lo}..{hi} px)")

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.check(inputs[0])
        out = self.model(*[t.to(self.device) for t in inputs])
        return out[0] if isinstance(out, (list, tuple)) else out
