"""Deployment ranges and precisions: AOTInductor batch 1 under runtime input checks, the TensorRT profile's
minimum size, a valid bf16 graph, and fp16 parity measured with real half-precision arithmetic."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gantk.errors import GantkError
from gantk.export import OrtRunner, check_parity, export_onnx, load_runner, spec_for_generator
from gantk.export.backends import Builder, onnx_file, smallest_size
from gantk.export.onnx import lint_tensorrt, load_onnx, opset_of, write_precision_variant
from gantk.export.parity import FP16_ARITHMETIC, Comparator, sample_photos
from gantk.models import define_G


def resnet_spec(ngf=4):
    torch.manual_seed(0)
    return spec_for_generator(define_G(3, 3, ngf, "resnet_6blocks", norm="instance").eval(), "cyclegan")


@pytest.fixture(scope="module")
def photos():
    return sample_photos(2)


CHECKED_RUN = """
import json, sys, torch
data = torch.load(sys.argv[1])
model = torch._inductor.aoti_load_package(sys.argv[2])
result = {}
for key, x in data["inputs"].items():
    try:
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        result[key] = float((out - data["refs"][key]).abs().max())
    except Exception as e:
        result[key] = str(e).strip()
print(json.dumps(result))
"""


def test_aoti_package_accepts_batch_1_to_max_batch_with_runtime_input_checks(tmp_path, photos):
    """The raw package (as the C++ app loads it) with AOTI_RUNTIME_CHECK_INPUTS=1, in a fresh process:
    batch 1 and the largest batch at the smallest and largest size match eager; a size above max_size is refused."""
    spec = resnet_spec()
    builder = Builder(spec, tmp_path, max_batch=3, opt_size=32, max_size=64)
    package = builder.build("aoti")
    compare = Comparator(spec, photos)
    cases = {f"{b}x{s}": (b, s) for b in (1, 3) for s in (8, 64)}
    inputs = {k: compare.inputs(b, s)[0] for k, (b, s) in cases.items()}
    refs = {k: torch.from_numpy(compare.reference(b, s)) for k, (b, s) in cases.items()}
    inputs["too_big"] = compare.inputs(1, 68)[0]
    refs["too_big"] = torch.zeros(1)
    torch.save({"inputs": inputs, "refs": refs}, tmp_path / "data.pt")
    env = {**os.environ, "AOTI_RUNTIME_CHECK_INPUTS": "1"}
    run = subprocess.run([sys.executable, "-c", CHECKED_RUN, str(tmp_path / "data.pt"), str(package)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for key in cases:
        assert isinstance(result[key], float) and result[key] < 1e-4, (key, result[key])
    assert "dim value is too large" in result["too_big"] and "<= 64" in result["too_big"]
    # the Python runner refuses sizes outside the declared range in one line, check or not
    runner = load_runner(package)
    assert runner.metadata["min_size"] == 8 and runner.metadata["max_size"] == 64
    for b, s in ((1, 68), (4, 32), (1, 4)):
        with pytest.raises(GantkError, match="outside the compiled range"):
            runner.run_torch(torch.zeros(b, 3, s, s))


def test_min_size_comes_from_the_architecture_and_is_the_profile_minimum(tmp_path, photos):
    spec = resnet_spec()
    assert smallest_size(spec) == 8  # 8 / 4 = 2 px after two downsamplings: reflect padding's minimum
    builder = Builder(spec, tmp_path, opt_size=64, max_size=128)
    assert builder.sizes == (8, 64, 128) and builder.profile()["input"][0] == (1, 3, 8, 8)
    path = builder.build("onnx")
    assert "--minShapes=input:1x3x8x8 " in (tmp_path / "model.trtexec.sh").read_text()
    report = check_parity(spec, OrtRunner(path), photos, [8], "fp32")  # ONNX Runtime at the minimum
    assert report.passed, report.table()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="Pad reflect"):  # and below it the graph itself fails
        session.run(None, {"input": np.zeros((1, 3, 4, 4), np.float32)})
    with pytest.raises(GantkError, match="8 <= min"):
        Builder(spec, tmp_path, min_size=4, opt_size=64, max_size=128)


def test_bf16_graph_is_valid_and_linted_for_tensorrt_11(tmp_path):
    spec = resnet_spec()
    builder = Builder(spec, tmp_path, opt_size=32, max_size=64)
    path = onnx_file(builder, "bf16")  # what --format trt-bf16 builds its engine from
    model = load_onnx(path)
    onnx.checker.check_model(model, full_check=True)
    assert opset_of(model) >= 22
    assert any(t.data_type == onnx.TensorProto.BFLOAT16 for t in model.graph.initializer)
    assert lint_tensorrt(model) == [] and lint_tensorrt(model, trt_version=11) == []
    assert any("opset 22 > 20" in p and "TensorRT 10" in p for p in lint_tensorrt(model, trt_version=10))
    assert "--stronglyTyped" in (tmp_path / "model.bf16.trtexec.sh").read_text()
    assert lint_tensorrt(load_onnx(builder.build("onnx")), trt_version=10) == []  # fp32 opset 17 parses on 10
    # ONNX Runtime accepts the graph; its CPU provider has no bf16 Conv kernel, so it cannot run it here
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        assert "NOT_IMPLEMENTED" in str(e) and "Conv" in str(e), e
    else:
        session.run(None, {"input": np.zeros((1, 3, 16, 16), np.float32)})


def test_fp16_parity_on_cpu_reports_real_half_precision_arithmetic(tmp_path, photos):
    spec = resnet_spec(ngf=8)
    path = write_precision_variant(export_onnx(spec, tmp_path / "g.onnx"), "fp16")
    report = check_parity(spec, OrtRunner(path), photos, [32, 64], "fp16")
    assert report.passed, report.table()
    for row in report.to_dict()["rows"]:
        true16 = row[FP16_ARITHMETIC]
        assert set(true16) >= {"psnr", "max_abs", "pass"} and 30 < true16["psnr"] < row["psnr"], row
    assert f"{FP16_ARITHMETIC}:" in report.table() and "computes the fp16 graph in fp32" in report.table()
