"""`gantk serve`: a generator as a Triton Inference Server endpoint (HTTP + gRPC) with PyTriton
(`pip install 'gantk[serve]'`): a real tritonserver whose Python backend calls back into this process.

The model is named and shaped like the Triton model repository `gantk export --format triton-repo` writes
(fp32 `input` (N, C, H, W) [+ `z` (N, nz)] -> `output` (N, C', H, W), images in [-1, 1], dynamic batching),
so one client serves both. It runs an artifact of an export folder (ONNX Runtime, AOTInductor, TensorRT or
the released .safetensors, through `load_runner`) or a generator file / experiment in PyTorch eager."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import sysconfig
from pathlib import Path

from gantk.errors import GantkError
from gantk.export.backends import ARTIFACTS
from gantk.export.runners import Runner, load_runner
from gantk.export.triton_server import check_model_name, preferred_batch_sizes, tensor_dims
from gantk.runtime import require_module

PREFERENCE = ("trt-fp16", "trt", "onnx", "aoti", "openvino", "safetensors")  # served when --artifact is not given


def check_pytriton() -> None:
    require_module("pytriton.triton", "gantk serve (PyTriton)")


def check_address(host: str, ports: dict[str, int]) -> None:
    """One-line errors for a host that is not an IP address and for ports out of range or repeated."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise GantkError(f"--host {host!r}: expected an IP address (127.0.0.1 serves this machine only)") from None
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise GantkError(f"{option} {port}: expected a port in 1..65535")
    if len(set(ports.values())) < len(ports):
        raise GantkError(f"{', '.join(ports)}: need different ports, got {', '.join(map(str, ports.values()))}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def open_export(folder: str | Path, artifact: str | None = None, device: str = "cpu") -> tuple[Runner, dict, str]:
    """(runner, metadata, format) of an export folder's artifact: `artifact` (a format it holds), else the
    first of PREFERENCE that it holds and that can run here."""
    folder = Path(folder)
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        raise GantkError(f"{folder}: not a gantk export folder (no manifest.json); export with `gantk export`")
    try:
        manifest = json.loads(manifest_file.read_text())
        held = {f: rel for f, rel in manifest["artifacts"].items() if f != "triton-repo"}
    except (ValueError, KeyError, AttributeError) as e:
        raise GantkError(f"{manifest_file}: not a readable gantk export manifest ({e})") from None
    if not manifest.get("passed", True):
        raise GantkError(f"{folder}: its artifacts failed their parity check (manifest.json); export again")
    if artifact is not None and artifact not in held:
        raise GantkError(f"--artifact {artifact}: {folder} holds {', '.join(held) or 'no servable artifact'}")
    fmt = artifact or next((f for f in PREFERENCE if f in held and not ARTIFACTS[f].unavailable(device)), None)
    if fmt is None:
        raise GantkError(f"{folder}: none of its artifacts ({', '.join(held)}) can run here; "
                         "export onnx or safetensors")
    return load_runner(folder / held[fmt], device), manifest["metadata"], fmt


def serve(runner: Runner, metadata: dict, name: str = "model", host: str = "127.0.0.1", http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002, max_batch: int = 8, delay_us: int = 100,
          log=print) -> None:
    """Serve `runner` as Triton model `name` until SIGINT/SIGTERM (or until the server dies)."""
    check_pytriton()
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    check_address(host, {"--http_port": http_port, "--grpc_port": grpc_port, "--metrics_port": metrics_port})
    check_model_name(name)
    if max_batch < 1:
        raise GantkError(f"--max_batch {max_batch}: must be >= 1")
    inputs, outputs = tensor_dims(metadata)

    @batch
    def infer(**feeds):
        return {"output": runner(feeds["input"], feeds.get("z"))}

    # the Python backend's stub must load this interpreter's libpython, not another one of the same version
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
    signal.signal(signal.SIGTERM, _interrupt)
    triton = Triton(config=TritonConfig(http_address=host, http_port=http_port, grpc_address=host,
                                        grpc_port=grpc_port, metrics_address=host, metrics_port=metrics_port))
    try:
        triton.bind(model_name=name, infer_func=infer,
                    inputs=[Tensor(name=n, dtype=np.float32, shape=tuple(d)) for n, d in inputs],
                    outputs=[Tensor(name=n, dtype=np.float32, shape=tuple(d)) for n, d in outputs],
                    config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=delay_us, preferred_batch_size=preferred_batch_sizes(max_batch))),
                    strict=True)
        triton.run()
        shapes = ", ".join(f"{n} {['N', *d]}" for n, d in inputs + outputs)
        log(f"serving {name} ({shapes}, fp32, [-1, 1]) on http://{host}:{http_port} and grpc {host}:{grpc_port}")
        triton.serve()  # blocks
    except KeyboardInterrupt:
        pass
    finally:
        triton.stop()
    log(f"stopped serving {name}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
