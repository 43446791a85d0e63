"""ONNX Runtime runner (CPU here; CUDA / TensorRT execution providers with onnxruntime-gpu)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.export.runners import Runner, numpy_feeds
from gantk.runtime import require_module

PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, providers: list | None = None, device: str = "cpu", threads: int = 0):
        ort = require_module("onnxruntime", "ONNX Runtime runner")
        from gantk.export.onnx import load_onnx, read_metadata
        model = load_onnx(path)
        super().__init__(path, read_metadata(model))
        wanted = providers or PROVIDERS["cuda" if str(device).startswith("cuda") else "cpu"]
        names = [p[0] if isinstance(p, tuple) else p for p in wanted]
        missing = [n for n in names if n not in ort.get_available_providers()]
        if providers and missing:
            raise GantkError(f"ONNX Runtime here has no {', '.join(missing)} (available: "
                             f"{', '.join(ort.get_available_providers())})")
        wanted = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) not in missing]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=wanted)
        except Exception as e:
            raise GantkError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.providers = self.session.get_providers()
        self.backend = f"onnxruntime-{self.providers[0].replace('ExecutionProvider', '').lower()}"

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["output"], numpy_feeds(inputs))[0].astype(np.float32, copy=False)
        return torch.from_numpy(out).to(inputs[0].device)
