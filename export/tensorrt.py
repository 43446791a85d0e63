"""TensorRT 10/11 engines from our ONNX graphs (optional: `pip install 'gantk[trt]'`, NVIDIA GPU; bf16
graphs are opset 22, so they need TensorRT 11).

fp32 engines are built with TF32 off. fp16/bf16 engines are built from the matching reduced-precision
ONNX (normalisation kept in fp32 behind Casts) as strongly typed networks, so TensorRT keeps exactly
those types instead of choosing its own: TensorRT 10 is asked to (the STRONGLY_TYPED flag, trtexec
--stronglyTyped); 11 always is (the flag is deprecated there and not passed)."""
from __future__ import annotations

import shlex
from pathlib import Path

import torch

from gantk.errors import GantkError
from gantk.export.runners import Runner, read_sidecar
from gantk.runtime import require_module


def import_tensorrt():
    return require_module("tensorrt", "TensorRT")


SUPPORTED_MAJORS = (10, 11)


def tensorrt_major(trt) -> int:
    """The installed TensorRT's major version, refused unless gantk supports it."""
    major = int(str(trt.__version__).split(".")[0])
    if major not in SUPPORTED_MAJORS:
        raise GantkError(f"TensorRT {trt.__version__} is installed; gantk supports 10.x and 11.x "
                         "(pip install 'tensorrt>=10,<12')")
    return major


def strongly_typed_flag(precision: str, trt_major: int | None) -> bool:
    """Whether to ask for a strongly typed network: reduced precision on TensorRT 10 (or an unknown version,
    where the flag is needed on 10 and ignored by 11); never on 11, which types every network strongly."""
    return precision in ("fp16", "bf16") and trt_major != 11


def profile_shapes(names: list[str], channels: int, nz: int, batch: tuple[int, int, int],
                   size: tuple[int, int, int]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """min/opt/max shapes per input for one optimisation profile."""
    shapes = {"input": tuple((b, channels, s, s) for b, s in zip(batch, size))}
    if "z" in names:
        shapes["z"] = tuple((b, nz) for b in batch)
    return shapes


def trtexec_command(onnx_path: str | Path, plan_path: str | Path, shapes: dict, precision: str,
                    cache: str | Path | None = None, trt_major: int | None = None) -> str:
    """The equivalent trtexec command line for TensorRT `trt_major` (10, 11; None: either)."""
    fmt = lambda i: ",".join(f"{k}:{'x'.join(map(str, v[i]))}" for k, v in shapes.items())
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}", f"--minShapes={fmt(0)}",
            f"--optShapes={fmt(1)}", f"--maxShapes={fmt(2)}"]
    args += ["--stronglyTyped"] if strongly_typed_flag(precision, trt_major) else []
    args += ["--noTF32"] if precision == "fp32" else []
    if cache:
        args.append(f"--timingCacheFile={cache}")
    return shlex.join(args)


def trtexec_script(onnx_path: Path, plan_path: Path, shapes: dict, precision: str, cache: str | None) -> str:
    """A POSIX shell script building the engine with the trtexec on PATH, 10.x or 11.x: where the two
    command lines differ it picks one by the version trtexec prints ("[TensorRT v10xxxx]")."""
    cmd = {v: trtexec_command(onnx_path.name, plan_path.name, shapes, precision, cache, v) for v in (10, 11)}
    body = cmd[11] if cmd[10] == cmd[11] else (
        'case "$(trtexec --help 2>&1)" in\n'
        f'  *"[TensorRT v10"*) {cmd[10]} ;;\n'
        f'  *) {cmd[11]} ;;\nesac')
    return (f"#!/bin/sh\n# Build a TensorRT engine (TensorRT 10.x or 11.x) from {onnx_path.name} without Python.\n"
            f'set -e\ncd "$(dirname "$0")"\n{body}\n')


def build_engine(onnx_path: str | Path, plan_path: str | Path, shapes: dict, precision: str = "fp32",
                 workspace_gb: float = 4.0, timing_cache: str | Path | None = None) -> Path:
    """Parse the ONNX file, build a serialized engine with one optimisation profile, save it."""
    trt = import_tensorrt()
    strong = strongly_typed_flag(precision, tensorrt_major(trt))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise GantkError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise GantkError(f"{cache_path}: a timing cache from another TensorRT version or GPU "
                         f"(TensorRT {trt.__version__} here); delete it to start a new one")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise GantkError(f"{onnx_path}: TensorRT engine build failed (see the log above)")
    if cache_path:
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    Path(plan_path).write_bytes(memoryview(plan))
    return Path(plan_path)


class TrtRunner(Runner):
    """Runs a serialized engine on the current CUDA device with torch tensors as I/O buffers."""
    backend = "tensorrt"

    def __init__(self, path: str | Path):
        trt = import_tensorrt()
        tensorrt_major(trt)
        super().__init__(path, read_sidecar(path))
        if not torch.cuda.is_available():
            raise GantkError(f"{path}: TensorRT engines need a CUDA GPU")
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise GantkError(f"{path}: not an engine for TensorRT {trt.__version__} on this GPU (an engine loads only "
                             "in the TensorRT version and on the GPU model it was built with); rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def run_torch(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: t.to("cuda", torch.float32).contiguous() for name, t in zip(("input", "z"), inputs)}
        for name, t in feeds.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape("output")), device="cuda", dtype=torch.float32)
        self.context.set_tensor_address("output", out.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise GantkError(f"{self.path}: TensorRT execution failed")
        torch.cuda.current_stream().wait_stream(self.stream)
        return out
