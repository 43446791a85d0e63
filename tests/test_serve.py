"""`gantk serve`: an export folder served by a real tritonserver (PyTriton) on loopback ports, queried with
tritonclient over HTTP and gRPC; outputs compared with the PyTorch generator, the served model's
configuration with the Triton repository `gantk export` writes; bad requests refused in one line."""
import contextlib
import importlib
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from gantk.checkpoints import atomic_save
from gantk.cli import main
from gantk.errors import GantkError
from gantk.export.parity import sample_photos
from gantk.export.triton_server import read_config
from gantk.models.loading import load_file, write_safetensors, write_sidecar
from gantk.models.networks import define_G
from gantk.models.registry import get_family
from gantk.serve import check_address, free_port, open_export

ARCH = dict(input_nc=3, output_nc=3, ngf=4, netG="resnet_6blocks", norm="instance")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained-style generator file and its export folder (ONNX, released safetensors, Triton repository)."""
    tmp = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    pth = tmp / "latest_net_G.pth"
    atomic_save(define_G(**ARCH).state_dict(), pth)
    write_sidecar(pth, "cyclegan", "G", ARCH)
    assert main(["export", "--weights", str(pth), "--format", "onnx,safetensors,triton-repo", "--out",
                 str(tmp / "exp"), "--parity_sizes", "32,64", "--max_batch", "4"]) == 0
    return pth, tmp / "exp"


def test_bad_requests_are_one_line_errors(exported, tmp_path):
    _, folder = exported
    for host, ports, needle in (("localhost", {"--http_port": 1}, "--host 'localhost': expected an IP address"),
                                ("127.0.0.1", {"--http_port": 0}, "--http_port 0: expected a port in 1..65535"),
                                ("127.0.0.1", {"--http_port": 9000, "--grpc_port": 9000}, "need different ports")):
        with pytest.raises(GantkError, match=needle):
            check_address(host, ports)
    with pytest.raises(GantkError, match="--artifact aoti: .* holds onnx, safetensors"):
        open_export(folder, "aoti")
    with pytest.raises(GantkError, match="no manifest.json"):
        open_export(folder / "triton")
    failed, broken = tmp_path / "failed", tmp_path / "broken"
    for bad, text in ((failed, json.dumps({**json.loads((folder / "manifest.json").read_text()), "passed": False})),
                      (broken, "{")):
        bad.mkdir()
        (bad / "manifest.json").write_text(text)
    with pytest.raises(GantkError, match="failed: its artifacts failed their parity check"):
        open_export(failed)
    with pytest.raises(GantkError, match=r"broken/manifest.json: not a readable gantk export manifest"):
        open_export(broken)
    runner, metadata, fmt = open_export(folder)
    assert fmt == "onnx" and runner.path.name == "latest_net_G.onnx" and metadata["gantk_arch"]["ngf"] == 4


def wait_ready(client, name, server, log, timeout=120):
    """Poll until the model is ready and gantk says it serves it; fail with the log if the server exits first."""
    start = time.time()
    while time.time() - start < timeout:
        if server.poll() is not None:
            pytest.fail(f"gantk serve exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            if client.is_model_ready(name) and f"serving {name} " in log.read_text():
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"gantk serve was not ready within {timeout} s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def gantk_serve(tmp_path, *args):
    """`gantk serve ... --model_name gen` in a subprocess on free loopback ports: yields (http, grpc) clients once
    the model is ready; then SIGINT, and the server must stop cleanly."""
    pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed (pip install 'gantk[serve]')")
    http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    log = tmp_path / "serve.log"  # a file, not a pipe: Triton logs enough to fill a pipe nobody reads
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gantk", "serve", *args, "--model_name", "gen",
                                   *(a for k, p in ports.items() for a in (f"--{k}_port", str(p)))],
                                  stdout=out, stderr=subprocess.STDOUT)
    clients = http.InferenceServerClient(f"127.0.0.1:{ports['http']}"), grpc.InferenceServerClient(
        f"127.0.0.1:{ports['grpc']}")
    try:
        wait_ready(clients[0], "gen", server, log)
        yield clients
    finally:
        for client in clients:  # Triton waits for open connections before it exits
            client.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0 and "stopped serving gen" in log.read_text(), log.read_text()[-3000:]


def infer(client, feeds: dict) -> np.ndarray:
    """One request with tritonclient's own API (the http or grpc module of the client)."""
    module = importlib.import_module(type(client).__module__.rsplit(".", 1)[0])
    inputs = []
    for name, data in feeds.items():
        inputs.append(module.InferInput(name, list(data.shape), "FP32"))
        inputs[-1].set_data_from_numpy(data)
    return client.infer("gen", inputs, outputs=[module.InferRequestedOutput("output")]).as_numpy("output")


def photo(h=48, w=64) -> np.ndarray:
    """A real photo as (1, 3, h, w) in [-1, 1]."""
    rgb = np.asarray(sample_photos(1)[0].resize((w, h)), np.float32)
    return (rgb.transpose(2, 0, 1)[None] / 127.5 - 1).astype(np.float32)


def test_serve_answers_http_and_grpc_like_the_generator(exported, tmp_path):
    pth, folder = exported
    with gantk_serve(tmp_path, "--export", str(folder), "--max_batch", "4") as (http_client, grpc_client):
        # the served configuration is the one `gantk export --format triton-repo` writes
        served = grpc_client.get_model_config("gen").config
        written = read_config(folder / "triton" / "latest_net_G" / "config.pbtxt")
        assert [(t.name, list(t.dims)) for t in served.input] == [(t.name, list(t.dims)) for t in written.input]
        assert [(t.name, list(t.dims)) for t in served.output] == [(t.name, list(t.dims)) for t in written.output]
        assert served.max_batch_size == written.max_batch_size == 4
        assert list(served.dynamic_batching.preferred_batch_size) == [1, 2, 4]
        x = photo()
        batch2 = np.concatenate([x, -x])
        with torch.no_grad():
            expected = load_file(pth).net(torch.from_numpy(batch2)).numpy()
        for client, data in ((http_client, x), (grpc_client, batch2)):
            out = infer(client, {"input": data})
            assert out.shape == (len(data), 3, 48, 64)
            assert np.abs(out - expected[:len(data)]).max() < 1e-4  # ONNX Runtime fp32 vs PyTorch
        # health and metadata endpoints
        assert http_client.is_server_live() and grpc_client.is_server_ready() and grpc_client.is_model_ready("gen")
        meta = http_client.get_model_metadata("gen")
        assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("input", "FP32")]
        # concurrent requests (dynamic batching may group them): each gets its own image's answer
        frames = [x * s for s in (1.0, -1.0, 0.5, -0.5, 0.25, 0.0)]
        with torch.no_grad():
            want = load_file(pth).net(torch.from_numpy(np.concatenate(frames))).numpy()
        with ThreadPoolExecutor(len(frames)) as pool:
            got = list(pool.map(lambda f: infer(grpc_client, {"input": f}), frames))
        assert max(np.abs(g[0] - w).max() for g, w in zip(got, want)) < 1e-4
        # a batch over --max_batch is refused, over both protocols, and the server goes on serving
        for client in (http_client, grpc_client):
            with pytest.raises(Exception, match="(?i)batch"):
                infer(client, {"input": np.concatenate([x] * 5)})
        assert np.abs(infer(http_client, {"input": x}) - expected[:1]).max() < 1e-4


def test_serve_a_released_multimodal_generator_in_pytorch(tmp_path):
    """A BicycleGAN generator file (input + latent z) served in PyTorch eager: outputs equal the generator's."""
    family = get_family("bicyclegan")
    arch = {**family.default_arch("G"), "ngf": 4, "netG": "unet_128"}
    torch.manual_seed(0)
    net = family.generator.build(**arch)
    net.arch = arch
    released = write_safetensors(net, tmp_path / "edges2shoes_G.safetensors", "bicyclegan")
    x = photo(128, 128)
    z = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    with torch.no_grad():
        expected = load_file(released).net(torch.from_numpy(x), torch.from_numpy(z)).numpy()
    with gantk_serve(tmp_path, "--weights", str(released)) as (http_client, grpc_client):
        for client in (http_client, grpc_client):
            out = infer(client, {"input": x, "z": z})
            assert out.shape == (1, 3, 128, 128) and np.abs(out - expected).max() < 1e-6
