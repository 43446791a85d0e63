"""OpenVINO: `gantk export --format openvino` (IR from the ONNX file, parity, manifest, --verify) and the
`openvino-cpu` bench backend, against PyTorch eager and ONNX Runtime; a clear reason when it is missing."""
import hashlib
import importlib.util
import json
import re
import sys

import numpy as np
import pytest
import torch

import gantk.bench as bench
from gantk.cli import main
from gantk.errors import GantkError
from gantk.export import OrtRunner, load_runner, spec_for_generator
from gantk.export.backends import ARTIFACTS, RUNTIMES
from gantk.export.openvino import OpenVinoRunner
from gantk.export.parity import Comparator, sample_photos
from gantk.models import define_G

MISSING = "openvino is not installed (pip install 'gantk[openvino]')"


def generator(seed=0):
    torch.manual_seed(seed)
    return define_G(3, 3, 8, "resnet_6blocks", norm="instance").eval()


@pytest.fixture(scope="module")
def photos():
    return sample_photos(2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`gantk export --format openvino` of a small generator file: (folder, the CLI's output)."""
    folder = tmp_path_factory.mktemp("ov")
    torch.save(generator().state_dict(), folder / "g.pth")
    out = folder / "exp"
    args = ["export", "--weights", str(folder / "g.pth"), "--netG", "resnet_6blocks", "--ngf", "8",
            "--format", "openvino", "--out", str(out), "--parity_sizes", "32,48"]
    return out, main(args)


def test_export_writes_ir_from_the_onnx_with_checksums_and_parity(exported):
    out, rc = exported
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] == {"onnx": "g.onnx", "openvino": "g.xml"}  # the IR's source is checked too
    assert {"g.xml", "g.bin", "g.onnx"} <= set(manifest["files"])
    for name in ("g.xml", "g.bin"):
        data = (out / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    record = {r["format"]: r for r in manifest["parity"]}["openvino"]
    assert record["backend"] == "openvino-cpu" and record["precision"] == "fp32" and record["passed"]
    assert [r["input"] for r in record["rows"]] == ["2x3x32x32", "2x3x48x48"]
    assert all(r["max_abs"] <= 1e-4 for r in record["rows"])
    assert 'element_type="f16"' not in (out / "g.xml").read_text()  # weights kept in fp32


def test_ir_matches_eager_and_onnx_runtime_at_new_shapes(exported, photos):
    """Dynamic batch and size as in the ONNX graph; fp32 arithmetic, the latency hint and the thread count
    as asked (the CPU plugin would pick bf16 by itself on CPUs with bf16 instructions)."""
    out, _ = exported
    runner = load_runner(out / "g.xml", threads=1)
    assert isinstance(runner, OpenVinoRunner) and runner.backend == "openvino-cpu"
    assert runner.metadata == spec_for_generator(generator(), "cyclegan").metadata()
    props = {k: str(runner.compiled.get_property(k))
             for k in ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS")}
    assert props == {"INFERENCE_PRECISION_HINT": "<Type: 'float32'>", "PERFORMANCE_HINT": "LATENCY",
                     "INFERENCE_NUM_THREADS": "1"}
    compare = Comparator(spec_for_generator(generator(), "cyclegan"), photos)
    ort = OrtRunner(out / "g.onnx")
    for batch, size in ((1, 40), (3, 64)):
        x = compare.inputs(batch, size)
        got = runner.run_torch(*x)
        assert got.shape == (batch, 3, size, size)
        assert compare.grade(got, batch, size, "fp32")["max_abs"] <= 1e-4
        assert np.abs(got.numpy() - ort.run_torch(*x).numpy()).max() <= 1e-4
    throughput = OpenVinoRunner(out / "g.xml", hint="THROUGHPUT")
    assert str(throughput.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert compare.grade(throughput.run_torch(*compare.inputs(2, 32)), 2, 32, "fp32")["pass"]


def test_verify_passes_then_fails_on_a_changed_weights_file(exported, capsys):
    out, _ = exported
    capsys.readouterr()
    assert main(["export", "--verify", str(out)]) == 0
    log = capsys.readouterr().out
    assert "parity of g.xml (openvino-cpu, fp32" in log and "FAIL" not in log
    changed = out.parent / "changed"
    changed.mkdir()
    for p in out.iterdir():
        (changed / p.name).write_bytes(p.read_bytes())
    data = bytearray((changed / "g.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (changed / "g.bin").write_bytes(data)
    assert main(["export", "--verify", str(changed)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gantk: error:") and "g.bin: SHA-256 differs" in err and "\n" not in err


def test_broken_ir_files_give_one_line_errors(exported, tmp_path):
    out, _ = exported
    (tmp_path / "lone.xml").write_text((out / "g.xml").read_text())
    (tmp_path / "cut.xml").write_text((out / "g.xml").read_text()[:5000])
    (tmp_path / "cut.bin").write_bytes((out / "g.bin").read_bytes())
    for name, needle in (("lone.xml", "OpenVINO IR not found .needs lone.xml and lone.bin"),
                         ("cut.xml", "cut.xml: not a readable OpenVINO IR")):
        with pytest.raises(GantkError, match=needle):
            load_runner(tmp_path / name)
    with pytest.raises(GantkError, match="performance hint 'FAST'"):
        OpenVinoRunner(out / "g.xml", hint="FAST")


def test_bench_openvino_cpu_is_timed_and_passes_parity(photos):
    doc = bench.run_bench(spec_for_generator(generator(), "cyclegan"), ["eager", "openvino-cpu"], [1, 2], [32],
                          photos, "cpu", warmup=1, repeats=2, threads=1, log=lambda s: None)
    rows = [r for r in doc["results"] if r["backend"] == "openvino-cpu"]
    assert [(r["batch"], r["size"], r["status"]) for r in rows] == [(1, 32, "ok"), (2, 32, "ok")]
    for r in rows:
        assert r["precision"] == "fp32" and r["parity"] == "PASS" and r["max_abs"] <= 1e-4
        assert r["median_ms"] > 0 and r["speedup"] > 0 and r["build_s"] >= 0


def test_not_installed_is_one_clear_line_naming_the_extra(monkeypatch, tmp_path, capsys, photos):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert ARTIFACTS["openvino"].unavailable("cpu") == MISSING
    assert RUNTIMES["openvino-cpu"].unavailable(torch.device("cpu")) == MISSING
    torch.save(generator().state_dict(), tmp_path / "g.pth")
    assert main(["export", "--weights", str(tmp_path / "g.pth"), "--netG", "resnet_6blocks", "--ngf", "8",
                 "--format", "openvino", "--out", str(tmp_path / "exp")]) == 2
    assert capsys.readouterr().err.strip() == f"gantk: error: --format openvino: {MISSING}"
    assert not (tmp_path / "exp").exists()
    doc = bench.run_bench(spec_for_generator(generator(), "cyclegan"), ["openvino-cpu"], [1], [32], photos, "cpu",
                          log=lambda s: None)
    assert doc["results"] == [{"backend": "openvino-cpu", "status": "unavailable", "reason": MISSING}]
    monkeypatch.setitem(sys.modules, "openvino", None)  # importing it fails: the runner says the same
    with pytest.raises(GantkError, match=re.escape(MISSING)):
        OpenVinoRunner(tmp_path / "g.xml")
