"""OpenVINO IR (`.xml` graph + `.bin` fp32 weights) converted from the ONNX export, and its CPU runner.

The IR keeps the ONNX graph's dynamic batch/height/width and carries gantk's metadata in its rt_info. The
runner compiles it for OpenVINO's CPU plugin with fp32 arithmetic requested explicitly: on CPUs with bf16
instructions (AVX512-BF16, AMX) the plugin otherwise computes in bf16, which an fp32 parity check rejects."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gantk.errors import GantkError
from gantk.export.runners import Runner, numpy_feeds
from gantk.runtime import require_module

METADATA_KEY = "gantk_metadata"
HINTS = ("LATENCY", "THROUGHPUT")


def export_openvino(onnx_path: str | Path, path: str | Path, metadata: dict) -> Path:
    """Convert an ONNX file to OpenVINO IR at `path` (.xml, weights beside it in .bin, kept in fp32)."""
    ov = require_module("openvino", "OpenVINO export")
    path = Path(path)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise GantkError(f"{onnx_path}: OpenVINO cannot convert it ({str(e).strip().splitlines()[0]})") from None
    model.set_rt_info(json.dumps(metadata), METADATA_KEY)
    ov.save_model(model, str(path), compress_to_fp16=False)  # the default would halve the weights
    return path


class OpenVinoRunner(Runner):
    """An IR compiled for OpenVINO's CPU plugin: fp32 inference, `hint` LATENCY (one request at a time, as
    bench times it) or THROUGHPUT (parallel streams), `threads` (0: OpenVINO's default)."""
    backend = "openvino-cpu"

    def __init__(self, path: str | Path, threads: int = 0, hint: str = "LATENCY"):
        ov = require_module("openvino", "OpenVINO runner")
        if hint not in HINTS:
            raise GantkError(f"OpenVINO performance hint {hint!r}: expected one of {', '.join(HINTS)}")
        path = Path(path)
        if not path.is_file() or not path.with_suffix(".bin").is_file():
            raise GantkError(f"{path}: OpenVINO IR not found (needs {path.name} and {path.with_suffix('.bin').name})")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise GantkError(f"{path}: not a readable OpenVINO IR ({str(e).strip().splitlines()[0]})") from None
        meta = json.loads(model.get_rt_info(METADATA_KEY).astype(str)) if model.has_rt_info(METADATA_KEY) else {}
        super().__init__(path, meta)
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.request.infer(numpy_feeds(inputs))[self.compiled.output(0)]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(inputs[0].device)
