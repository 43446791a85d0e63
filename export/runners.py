"""One runner protocol over every backend: `run_torch(*inputs) -> output` on torch tensors (images NCHW in
[-1, 1], then z for BicycleGAN), `runner(x[, z])` on arrays, and PNG in -> PNG out. Artifacts (ONNX Runtime,
AOTInductor, TensorRT) and the PyTorch model itself (`TorchRunner`: eager, compile, winograd, ...) all have it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.data.transforms import transform
from gantk.io import load_image, save_image


def sidecar(path: str | Path) -> Path:
    """`<artifact>.json`: the metadata written next to artifacts that cannot hold it themselves."""
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path) -> dict:
    p = sidecar(path)
    return json.loads(p.read_text()) if p.is_file() else {}


class Runner:
    """Base class: subclasses implement `run_torch(*inputs: torch.Tensor) -> torch.Tensor`."""
    backend = "?"

    def __init__(self, path: str | Path, metadata: dict | None = None):
        self.path = Path(path)
        self.metadata = metadata or {}

    @property
    def nz(self) -> int:
        return int(self.metadata.get("nz", 0))

    @property
    def multiple(self) -> int:
        return int(self.metadata.get("size_multiple", 4))

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x, z=None) -> np.ndarray:
        inputs = [_tensor(x)]
        if self.nz:
            if z is None:
                raise GantkError(f"{self.path}: this model needs a latent z of shape (N, {self.nz})")
            inputs.append(_tensor(z))
        with torch.no_grad():
            return self.run_torch(*inputs).float().cpu().numpy()

    def translate_file(self, src: str | Path, dst: str | Path, seed: int = 0) -> Path:
        """Read an image, scale it to the size multiple as `gantk translate` does, run, write the result."""
        gray = self.metadata.get("gantk_arch", {}).get("input_nc") == 1
        x = transform(load_image(src), "none", 0, 0, None, grayscale=gray, base=self.multiple)[None]
        z = torch.randn(1, self.nz, generator=torch.Generator().manual_seed(seed)) if self.nz else None
        return save_image(torch.from_numpy(self(x, z)), dst)


class TorchRunner(Runner):
    """The PyTorch model, eager or with speed options applied (`gantk.acceleration.accelerate`)."""

    def __init__(self, fn, name: str, metadata: dict | None = None):
        super().__init__(name, metadata)
        self.fn, self.backend = fn, f"pytorch-{name}"

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs)


def eager_runner(spec, name: str, device: str = "cpu") -> TorchRunner:
    """The generator of an ExportSpec in PyTorch eager on `device` (inputs may arrive on the CPU)."""
    net = spec.net.to(device)
    return TorchRunner(lambda *xs: net(*(x.to(device) for x in xs)), name, spec.metadata())


def _tensor(t) -> torch.Tensor:
    return torch.as_tensor(np.asarray(t, dtype=np.float32)) if not isinstance(t, torch.Tensor) else t.detach().float()


def numpy_feeds(inputs) -> dict[str, np.ndarray]:
    """{"input": x[, "z": z]} as contiguous float32 arrays, for runtimes that take named arrays."""
    return {name: np.ascontiguousarray(t.detach().cpu().float().numpy()) for name, t in zip(("input", "z"), inputs)}


def load_runner(path: str | Path, device: str = "cpu", **kw) -> Runner:
    """Open any gantk artifact by its suffix: .onnx (ONNX Runtime), .pt2 (AOTInductor), .plan/.engine
    (TensorRT), .xml (OpenVINO IR, on the CPU), .safetensors (PyTorch eager), or a Triton model repository
    folder (its model file)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*/1/model.*"))
        if not files:
            raise GantkError(f"{path}: not a Triton model repository (no <model>/1/model.* file)")
        return load_runner(files[0], device, **kw)
    if not path.exists():
        raise GantkError(f"{path}: artifact not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from gantk.export.ort import OrtRunner
        return OrtRunner(path, device=device, **kw)
    if suffix == ".pt2":
        from gantk.export.aoti import AotiRunner
        return AotiRunner(path, device=device)
    if suffix in (".plan", ".engine"):
        from gantk.export.tensorrt import TrtRunner
        return TrtRunner(path)
    if suffix == ".safetensors":  # a released generator: PyTorch eager in the inference mode it was exported with
        from gantk.export.spec import spec_for_generator
        from gantk.models.loading import load_file
        loaded = load_file(path)
        bn_mode = "batch" if loaded.description.get("bn_mode") == "batch" else "eval"
        return eager_runner(spec_for_generator(loaded.net, loaded.family.name, bn_mode), path.name, device)
    if suffix == ".xml":
        from gantk.export.openvino import OpenVinoRunner
        return OpenVinoRunner(path, **kw)
    raise GantkError(f"{path}: unknown artifact type {suffix!r}: expected .onnx, .pt2, .plan/.engine, .xml, "
                     ".safetensors or a folder")
