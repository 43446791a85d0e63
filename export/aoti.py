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
                device: str = "cpu") -> Path:
    """Compile `spec.net` into an AOTInductor package accepting 1..max_batch images of any multiple of
    spec.multiple up to max_size px."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = spec.multiple
    if max_size < 2 * m:
        raise GantkError(f"--max_size {max_size}: must be at least {2 * m} for this generator")
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    h = torch.export.Dim("h", min=1, max=max_size // m)
    w = torch.export.Dim("w", min=1, max=max_size // m)
    dev = torch.device(device)
    inputs = tuple(t.to(dev) for t in spec.example_inputs(batch=2, size=2 * m))
    shapes = ({0: batch, 2: m * h, 3: m * w},) + (({0: batch},) if spec.nz else ())
    with warnings.catch_warnings(), torch.no_grad(), on_device(spec.net, dev) as net:
        warnings.simplefilter("ignore")
        program = torch.export.export(net, inputs, dynamic_shapes=shapes)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    meta = {**spec.metadata(), "device": dev.type, "max_batch": max_batch, "max_size": max_size}
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

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(*[t.to(self.device) for t in inputs])
        return out[0] if isinstance(out, (list, tuple)) else out
