"""Export: ONNX graphs, fp16, TensorRT lint, ONNX Runtime / AOTInductor / C++ parity, Triton repositories."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from gantk.cli import main
from gantk.errors import GantkError
from gantk.export import (OrtRunner, check_parity, convert_precision, export_onnx, lint_tensorrt,
                          load_runner, run_export, spec_for_generator)
from gantk.export.onnx import load_onnx, read_metadata
from gantk.export.parity import THRESHOLDS, errors, parity_batch, sample_photos
from gantk.export.tensorrt import profile_shapes, trtexec_command
from gantk.export.triton_server import check_model_repository, read_config
from gantk.io import load_image, pil_to_tensor
from gantk.models import define_G

TRT_OPS_SEEN = {"Conv", "ConvTranspose", "InstanceNormalization", "Pad", "Relu", "LeakyRelu", "Tanh", "Add",
                "Concat", "BatchNormalization"}


def generator(netG="resnet_6blocks", norm="instance", ngf=4, seed=0, dropout=False):
    torch.manual_seed(seed)
    g = define_G(3, 3, ngf, netG, norm=norm, use_dropout=dropout)
    if norm == "batch":  # give BatchNorm non-trivial running statistics, as a trained net has
        g.train()
        with torch.no_grad():
            for _ in range(3):
                g(torch.randn(2, 3, 128, 128))
    return g.eval()


@pytest.fixture(scope="module")
def photos():
    return sample_photos(2)


@pytest.mark.parametrize("netG,norm,bn_mode,sizes", [
    ("resnet_6blocks", "instance", "eval", [32, 48]),
    ("unet_128", "batch", "batch", [128, 256]),
    ("unet_128", "batch", "eval", [128, 256]),
])
def test_onnx_parity_clean_graph_and_metadata(tmp_path, photos, netG, norm, bn_mode, sizes):
    spec = spec_for_generator(generator(netG, norm), "pix2pix" if norm == "batch" else "cyclegan", bn_mode)
    path = export_onnx(spec, tmp_path / "g.onnx")
    model = load_onnx(path)
    ops = {n.op_type for n in model.graph.node}
    assert ops <= TRT_OPS_SEEN, ops - TRT_OPS_SEEN  # no Shape/Gather/ConstantOfShape index arithmetic left
    assert lint_tensorrt(model) == []
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    meta = read_metadata(model)
    assert meta["gantk_arch"]["netG"] == netG and meta["input_range"] == [-1, 1]
    assert meta["bn_mode"] == (bn_mode if norm == "batch" else "none")
    if norm == "batch":
        assert ("BatchNormalization" in ops) == (bn_mode == "eval")
    report = check_parity(spec, OrtRunner(path), photos, sizes, "fp32")  # batch 2 at two sizes
    assert report.passed, report.table()
    assert all(r["max_abs"] < 1e-4 for r in report.rows)


def test_bn_modes_differ_and_batch_mode_is_reference_batch_statistics(photos):
    """'batch' = the reference test script (train-mode BatchNorm) at its batch size of 1."""
    g = generator("unet_128", "batch")
    x = parity_batch(spec_for_generator(generator("unet_128", "batch"), bn_mode="eval"), photos[:1], 128)[0]
    ref = generator("unet_128", "batch")
    ref.train()
    for m in ref.modules():  # dropout off: both modes are deterministic
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        want = ref(x)
        batch = spec_for_generator(g, bn_mode="batch").net(x)
        running = spec_for_generator(generator("unet_128", "batch"), bn_mode="eval").net(x)
    assert torch.allclose(batch, want, atol=1e-5)
    assert (batch - running).abs().max() > 1e-2


def test_fp16_keeps_instance_norm_in_fp32(tmp_path, photos):
    spec = spec_for_generator(generator(), "cyclegan")
    fp16 = convert_precision(load_onnx(export_onnx(spec, tmp_path / "g.onnx")), "fp16")
    onnx.checker.check_model(fp16, full_check=True)
    types = {v.name: v.type.tensor_type.elem_type for v in list(fp16.graph.value_info) + list(fp16.graph.input)}
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    for n in fp16.graph.node:
        if n.op_type == "InstanceNormalization":
            assert types[n.input[0]] == TensorProto.FLOAT and inits[n.input[1]] == TensorProto.FLOAT
        if n.op_type == "Conv":
            assert inits[n.input[1]] == TensorProto.FLOAT16
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # fp32 I/O
    assert read_metadata(fp16)["precision"] == "fp16"
    path = tmp_path / "g16.onnx"
    onnx.save(fp16, path)
    report = check_parity(spec, OrtRunner(path), photos, [32, 64], "fp16")
    assert report.passed, report.table()
    assert all(r["max_abs"] > 0 for r in report.rows)  # really computed in half precision


def _graph(nodes, inits=(), opset=17, inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_lint_flags_what_tensorrt_rejects():
    w = numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), "w")
    assert lint_tensorrt(_graph([helper.make_node("Conv", ["x", "w"], ["y"])], [w])) == []
    cases = {
        "custom domain": _graph([helper.make_node("InstanceNormAct", ["x"], ["y"], domain="gantk")]),
        "must be an initializer": _graph([helper.make_node("Conv", ["x", "x"], ["y"])]),
        "pad mode 'wrap'": _graph([helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap")],
                                  [numpy_helper.from_array(np.zeros(8, np.int64), "p")]),
        "training_mode=1": _graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                    training_mode=1)]),
        "not in the supported set": _graph([helper.make_node("NonZero", ["x"], ["y"])]),
        "opset 26": _graph([helper.make_node("Relu", ["x"], ["y"])], opset=26),  # TensorRT 11 parses up to 25
        "batch dimension is static": _graph([helper.make_node("Relu", ["x"], ["y"])], inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]),
    }
    opset21 = _graph([helper.make_node("Relu", ["x"], ["y"])], opset=21)
    assert lint_tensorrt(opset21) == [] and any("opset 21" in p for p in lint_tensorrt(opset21, trt_version=10))
    for needle, model in cases.items():
        problems = lint_tensorrt(model)
        assert any(needle in p for p in problems), (needle, problems)


def test_trtexec_and_profiles_are_consistent():
    shapes = profile_shapes(["input", "z"], 3, 8, (1, 4, 8), (64, 256, 512))
    assert shapes == {"input": ((1, 3, 64, 64), (4, 3, 256, 256), (8, 3, 512, 512)), "z": ((1, 8), (4, 8), (8, 8))}
    cmd = trtexec_command("m.fp16.onnx", "m.plan", shapes, "fp16")
    assert "--minShapes=input:1x3x64x64,z:1x8" in cmd and "--maxShapes=input:8x3x512x512,z:8x8" in cmd
    assert "--stronglyTyped" in cmd and "--noTF32" in trtexec_command("m.onnx", "m.plan", shapes, "fp32")


def test_tensorrt_engine_parity(tmp_path, photos):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (optional extra gantk[trt], NVIDIA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")
    spec = spec_for_generator(generator(), "cyclegan")
    manifest = run_export(spec, tmp_path, ["trt", "trt-fp16"], photos, [64, 128], opt_size=128, max_size=256,
                          device="cuda", log=lambda s: None)
    assert manifest["passed"] and {"trt", "trt-fp16"} <= set(manifest["artifacts"])
    assert int(trt.__version__.split(".")[0]) >= 10 and [r["precision"] for r in manifest["parity"]][-2:] == [
        "fp32", "fp16"]


def test_export_pipeline_manifest_triton_and_runner_interface(tmp_path, photos):
    spec = spec_for_generator(generator(), "cyclegan")
    manifest = run_export(spec, tmp_path, ["onnx", "onnx-fp16", "triton-repo"], photos, [32, 64],
                          name="h2z", log=lambda s: None)
    assert manifest["passed"] and len(manifest["parity"]) == 2
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["onnx"].endswith("h2z.onnx")
    assert "--noTF32" in (tmp_path / "h2z.trtexec.sh").read_text()
    repo = tmp_path / "triton"
    assert check_model_repository(repo) == []
    from google.protobuf.json_format import MessageToDict
    cfg = MessageToDict(read_config(repo / "h2z" / "config.pbtxt"))  # Triton's own ModelConfig proto
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["maxBatchSize"] == 8
    assert cfg["input"][0] == {"name": "input", "dataType": "TYPE_FP32", "dims": ["3", "-1", "-1"]}
    assert cfg["output"][0]["dims"] == ["3", "-1", "-1"] and cfg["dynamicBatching"]["maxQueueDelayMicroseconds"] == "100"
    assert cfg["instanceGroup"][0]["kind"] == "KIND_CPU"
    (repo / "h2z" / "1" / "model.onnx").unlink()
    assert any("missing" in p for p in check_model_repository(repo))
    # PNG in -> PNG out through the common runner interface equals the eager model
    runner = load_runner(tmp_path / "h2z.onnx")
    src = tmp_path / "in.png"
    photos[0].resize((50, 37)).save(src)
    out = load_image(runner.translate_file(src, tmp_path / "out.png"))
    assert out.size == (48, 36)
    with torch.no_grad():
        want = spec.net(pil_to_tensor(load_image(src).resize((48, 36)))[None])
    got = pil_to_tensor(out)[None]
    assert (got - want).abs().max() <= 1 / 127.5 + 1e-6  # at most one 8-bit level apart


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two small generator files (different weights) as `gantk export --weights` takes them."""
    folder = tmp_path_factory.mktemp("weights")
    for seed, stem in enumerate(("first", "second")):
        torch.save(generator(seed=seed).state_dict(), folder / f"{stem}.pth")
    return folder / "first.pth", folder / "second.pth"


def export_args(weights, out, formats="onnx,onnx-fp16,triton-repo", *extra):
    return ["export", "--weights", str(weights), "--netG", "resnet_6blocks", "--ngf", "4", "--format", formats,
            "--out", str(out), "--parity_sizes", "32,64", *extra]


def checksums(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gantk: error:") and "\n" not in err, err
    return err


def test_failed_parity_leaves_the_previous_export_byte_identical(tmp_path, weights, capsys, monkeypatch):
    out = tmp_path / "exp"
    assert main(export_args(weights[0], out)) == 0
    before = checksums(out)
    monkeypatch.setitem(THRESHOLDS, "fp16", {"psnr": 1000.0})  # above PSNR_CAP: no fp16 artifact can pass
    assert main(export_args(weights[1], out)) == 2
    err = one_line_error(capsys)
    assert "parity FAILED for second.fp16.onnx [fp16: PSNR" in err and "limit 1000 dB" in err
    assert checksums(out) == before  # the previous export, untouched
    failed = json.loads((tmp_path / "exp.parity-failed" / "manifest.json").read_text())
    assert failed["passed"] is False and [r["passed"] for r in failed["parity"]] == [True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "exp.parity-failed"]  # no temporary left


def test_lpips_of_each_artifact_is_recorded_and_a_quality_gate_fails_like_a_parity_miss(tmp_path, weights, capsys,
                                                                                         photos):
    """With (random) LPIPS weights every parity row records the LPIPS of the artifact's output against eager's,
    the same number as LPIPS of ONNX Runtime's own run of the file; fp16 costs a small non-zero LPIPS. A gate of 0
    then fails the next export in one line and leaves the previous folder byte for byte."""
    from gantk.metrics import lpips
    from gantk.nn.lpips import load_lpips
    out, lp = tmp_path / "exp", ["--lpips-weights", "random", "--lpips-backbone", "random"]
    assert main(export_args(weights[0], out, "onnx,onnx-fp16", *lp)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quality"]["lpips"]["net"] == "alex" and "LPIPS" in capsys.readouterr().out
    rows = {r["artifact"]: r["rows"] for r in manifest["parity"]}
    net, spec = load_lpips("alex", "random", "random"), spec_for_generator(generator(seed=0), "cyclegan")
    x = parity_batch(spec, photos, 64)[0]
    with torch.no_grad():
        eager = spec.net(x)
    import onnxruntime
    ort = torch.from_numpy(onnxruntime.InferenceSession(str(out / "first.fp16.onnx")).run(None, {"input": x.numpy()})[0])
    assert rows["first.fp16.onnx"][1]["lpips"] == pytest.approx(lpips(net, eager, ort), rel=1e-4, abs=1e-12)
    assert all(r["lpips"] < 1e-9 for r in rows["first.onnx"])
    assert all(0 < r["lpips"] < 1e-3 for r in rows["first.fp16.onnx"])
    before = checksums(out)
    assert main(export_args(weights[1], out, "onnx,onnx-fp16", *lp, "--quality_gate", "lpips=0")) == 2
    err = one_line_error(capsys)
    assert "quality gate FAILED for" in err and "second.fp16.onnx [LPIPS " in err and "(gate 0)" in err
    assert checksums(out) == before
    failed = json.loads((tmp_path / "exp.parity-failed" / "manifest.json").read_text())
    assert failed["quality"]["gate"] == {"lpips": 0} and [r["gate_passed"] for r in failed["parity"]] == [False, False]


def test_fid_change_is_recorded_and_gated(tmp_path, weights, capsys, photos):
    """--eval_images with (random) Inception weights: the ONNX file's FID change against eager is ~0 (its outputs
    differ by rounding), recorded with both FIDs; a gate below it (fid=-1) fails the export in one line."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for i, p in enumerate(sample_photos(3)):
        p.resize((64, 64)).save(refs / f"{i}.png")
    args = export_args(weights[0], tmp_path / "exp", "onnx", "--eval_images", str(refs), "--inception-weights", "random")
    assert main(args + ["--quality_gate", "fid=-1"]) == 2
    assert "quality gate FAILED for first.onnx [FID change " in one_line_error(capsys)
    fid = json.loads((tmp_path / "exp.parity-failed" / "manifest.json").read_text())["parity"][0]["fid"]
    assert fid["images"] == 4 and fid["reference_images"] == 3 and fid["eager"] > 0
    assert fid["change"] == pytest.approx(fid["artifact"] - fid["eager"]) and abs(fid["change"]) < 1e-3 * fid["eager"]
    assert not (tmp_path / "exp").exists()


def test_quality_options_fail_in_one_line_before_any_work(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.delenv("GANTK_LPIPS", raising=False)
    monkeypatch.delenv("GANTK_LPIPS_BACKBONE", raising=False)
    for extra, needle in [(["--quality_gate", "speed=1"], "--quality_gate speed=1: expected lpips=MAX"),
                          (["--quality_gate", "lpips=x"], "--quality_gate lpips=x"),
                          (["--quality_gate", "lpips=0.01"], "--quality_gate lpips needs LPIPS weights"),
                          (["--quality_gate", "fid=1"], "--quality_gate fid needs --eval_images"),
                          (["--eval_images", str(tmp_path / "none"), "--inception-weights", "random"],
                           "--eval_images"),
                          (["--lpips-weights", "random", "--lpips-backbone", "random", "--parity_sizes", "16,32"],
                           "at least 31 px")]:
        assert main(export_args(weights[0], tmp_path / "exp", "onnx") + extra) == 2
        assert needle in one_line_error(capsys)
        assert list(tmp_path.iterdir()) == []


def test_second_model_replaces_the_folder_and_the_manifest_lists_exactly_its_files(tmp_path, weights):
    out = tmp_path / "exp"
    assert main(export_args(weights[0], out)) == 0
    assert {"first.onnx", "first.fp16.onnx", "triton/first/1/model.onnx"} <= set(checksums(out))
    assert main(export_args(weights[1], out, "onnx")) == 0
    files = checksums(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(files) == {"second.onnx", "second.trtexec.sh", "manifest.json"}
    assert manifest["files"] == {k: {"sha256": v, "size": (out / k).stat().st_size}
                                 for k, v in files.items() if k != "manifest.json"}
    assert manifest["artifacts"] == {"onnx": "second.onnx"} and manifest["parity"][0]["artifact"] == "second.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_export_killed_between_its_renames_is_put_back(tmp_path, weights, capsys):
    """Killed after moving the old folder aside and before the new one went in: the next export (or verify)
    puts the old one back first; killed after the new one went in: the aside copy and stale builds are deleted."""
    out = tmp_path / "exp"
    assert main(export_args(weights[0], out, "onnx")) == 0
    before = checksums(out)
    out.rename(tmp_path / f"exp.old-{dead_pid()}")
    (tmp_path / f"exp.tmp-{dead_pid()}").mkdir()
    assert main(["export", "--verify", str(out)]) == 0
    assert "put back the export that a killed export had moved aside" in capsys.readouterr().out
    assert checksums(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    shutil.copytree(out, tmp_path / f"exp.old-{dead_pid()}")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        busy = tmp_path / f"exp.tmp-{running.pid}"  # a running export's build: left alone
        busy.mkdir()
        assert main(export_args(weights[1], out, "onnx")) == 0
        running.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", busy.name]
    assert json.loads((out / "manifest.json").read_text())["artifacts"] == {"onnx": "second.onnx"}


def test_verify_passes_on_a_fresh_export_and_fails_after_a_flipped_byte(tmp_path, weights, capsys, monkeypatch):
    out = tmp_path / "exp"
    assert main(export_args(weights[0], out)) == 0
    monkeypatch.chdir(tmp_path)  # a relative folder; the manifest's source paths are absolute
    capsys.readouterr()
    assert main(["export", "--verify", "exp"]) == 0
    log = capsys.readouterr().out
    assert log.count("parity of ") == 2 and "FAIL" not in log and "verified exp: 6 files" in log
    data = bytearray((out / "first.fp16.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "first.fp16.onnx").write_bytes(data)
    assert main(["export", "--verify", "exp"]) == 2
    assert "first.fp16.onnx: SHA-256 differs" in one_line_error(capsys)


def test_verify_reruns_parity_against_the_generator(tmp_path, weights, capsys):
    """Files intact but the generator changed (its weights file overwritten): parity fails in one line."""
    out, pth = tmp_path / "exp", tmp_path / "g.pth"
    shutil.copyfile(weights[0], pth)
    assert main(export_args(pth, out, "onnx")) == 0
    shutil.copyfile(weights[1], pth)
    assert main(["export", "--verify", str(out)]) == 2
    assert "parity FAILED for g.onnx [fp32: max |err|" in one_line_error(capsys)


@pytest.mark.parametrize("bad", [["--max_batch", "0"], ["--max_size", "0"], ["--parity_sizes", "-64,0"],
                                 ["--opt_size", "0"], ["--out", "FILE"], ["--format", "onnx,nope"]])
def test_bad_options_fail_in_one_line_before_any_work(tmp_path, weights, capsys, bad):
    (tmp_path / "file").write_text("not a folder")
    args = export_args(weights[0], tmp_path / "exp") + [str(tmp_path / "file") if b == "FILE" else b for b in bad]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert bad[0] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_export_refuses_a_folder_of_other_files(tmp_path, weights, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(export_args(weights[0], tmp_path, "onnx")) == 2
    assert "not a gantk export" in one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_errors_are_hand_computable():
    ref = np.zeros((1, 3, 2, 2), np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = 0.2  # 0.2 on [-1, 1] is 25.5 grey levels
    e = errors(ref, out)
    assert e["max_abs"] == pytest.approx(0.2) and e["mean_abs"] == pytest.approx(0.2 / 12)
    assert e["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / (25.5 ** 2 / 12)), rel=1e-4)


def test_corrupt_artifacts_give_one_line_errors(tmp_path, capsys):
    spec = spec_for_generator(generator(), "cyclegan")
    good = export_onnx(spec, tmp_path / "g.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt2").write_bytes(b"not a zip file")
    (tmp_path / "x.bin").write_bytes(b"")
    for name, needle in (("cut.onnx", "not a readable ONNX model"), ("junk.pt2", "not a loadable AOTInductor"),
                         ("x.bin", "unknown artifact type"), ("missing.onnx", "not found")):
        with pytest.raises(GantkError, match=needle):
            load_runner(tmp_path / name)
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "bad.pth")
    assert main(["export", "--weights", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gantk: error:") and "\n" not in err


def test_cli_exports_an_official_style_checkpoint(tmp_path, capsys):
    g = generator("resnet_6blocks", ngf=8)
    torch.save({f"module.{k}": v for k, v in g.state_dict().items()}, tmp_path / "latest_net_G.pth")
    rc = main(["export", "--weights", str(tmp_path / "latest_net_G.pth"), "--format", "onnx",
               "--out", str(tmp_path / "exp"), "--parity_sizes", "32,48"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "2x3x48x48" in out and "FAIL" not in out
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["metadata"]["gantk_arch"]["netG"] == "resnet_6blocks" and manifest["metadata"]["gantk_arch"]["ngf"] == 8


@pytest.fixture(scope="module")
def aoti_package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aoti")
    spec = spec_for_generator(generator("resnet_6blocks", ngf=4), "cyclegan")
    manifest = run_export(spec, folder, ["aoti"], sample_photos(2), [32, 64], max_batch=4, max_size=128,
                          log=lambda s: None)
    return spec, folder / manifest["artifacts"]["aoti"]


def test_aoti_package_parity(aoti_package, photos):
    spec, path = aoti_package
    runner = load_runner(path)
    assert runner.backend == "aotinductor" and runner.metadata["max_batch"] == 4
    report = check_parity(spec, runner, photos, [48, 96], "fp32")  # sizes other than the export's
    assert report.passed, report.table()


@pytest.fixture(scope="module")
def cpp_app(tmp_path_factory):
    """export/cpp built once (cmake against the torch wheel's libtorch) for every C++ test."""
    if not (shutil.which("cmake") and shutil.which("c++")):
        pytest.skip("cmake and a C++ compiler are needed to build export/cpp")
    build = tmp_path_factory.mktemp("cpp") / "build"
    src = Path(__file__).resolve().parents[1] / "export" / "cpp"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *gen, "-DCMAKE_CXX_FLAGS=-Wall -Wextra",
                    f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    return build / "gantk_infer"


def run_cpp(exe, package, src, dst, *extra):
    return subprocess.run([str(exe), "--model", str(package), "--input", str(src), "--output", str(dst), *extra],
                          capture_output=True, text=True)


def cpp_vs_python(exe, package, src, tmp_path, name="o"):
    """gantk_infer and Python's Runner.translate_file on the same file: both outputs as uint8 arrays."""
    run = run_cpp(exe, package, src, tmp_path / f"{name}.cpp.png")
    assert run.returncode == 0, run.stderr
    load_runner(package).translate_file(src, tmp_path / f"{name}.py.png")
    got, want = (np.asarray(Image.open(tmp_path / f"{name}.{k}.png")).astype(int) for k in ("cpp", "py"))
    return got, want


def chelsea(w=451, h=300):
    from skimage import data
    return Image.fromarray(data.chelsea()).crop((0, 0, w, h))  # 451x300 whole; smaller crops from the top-left


def one_line_cpp_error(run, needle):
    assert run.returncode == 1 and run.stderr.startswith("gantk_infer: error:"), run.stderr
    assert run.stderr.count("\n") == 1 and needle in run.stderr, run.stderr


def test_cpp_app_runs_the_aoti_package(aoti_package, cpp_app, tmp_path, photos):
    _, package = aoti_package
    img = tmp_path / "in.png"
    photos[1].resize((66, 41)).save(img)
    got, want = cpp_vs_python(cpp_app, package, img, tmp_path)
    assert got.shape == want.shape == (40, 64, 3)  # 66 -> 64 (16.5 rounds to even), 41 -> 40: resized, not cut
    assert np.abs(got - want).max() <= 1  # same 8-bit picture up to rounding
    bad = run_cpp(cpp_app, tmp_path / "none.pt2", img, "x.png")
    one_line_cpp_error(bad, "model file not found")


@pytest.mark.parametrize("size", [(127, 98), (123, 101)])
def test_cpp_app_odd_sized_photo_matches_python(aoti_package, cpp_app, tmp_path, size):
    """Odd sizes are resized to the nearest multiple of 4 as Python does (127x98 -> 128x96, 123x101 -> 124x100),
    not cropped from the top-left."""
    _, package = aoti_package
    img = tmp_path / "odd.png"
    chelsea(*size).save(img)
    got, want = cpp_vs_python(cpp_app, package, img, tmp_path)
    assert got.shape == want.shape == ((96, 128, 3) if size == (127, 98) else (100, 124, 3))
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("kind", ["L", "I;16", "RGBA", "LA", "P"])
def test_cpp_app_converts_gray_rgba_and_palette_photos_like_python(aoti_package, cpp_app, tmp_path, kind):
    """A grayscale (8- or 16-bit), RGBA, grey+alpha or palette PNG into the 3-channel model: the same picture
    as Python's, and the same bytes on every run (it used to crash or write garbage)."""
    _, package = aoti_package
    photo = chelsea(97, 75)
    if kind == "I;16":
        img = Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257 + 100))
    elif kind in ("RGBA", "LA"):
        img = photo.convert(kind)
        img.putalpha(Image.fromarray(np.random.RandomState(0).randint(0, 256, (75, 97)).astype(np.uint8)))
    else:
        img = photo.convert(kind)
    src = tmp_path / "in.png"
    img.save(src)
    got, want = cpp_vs_python(cpp_app, package, src, tmp_path)
    assert got.shape == want.shape == (76, 96, 3)
    assert np.abs(got - want).max() <= 1
    again = run_cpp(cpp_app, package, src, tmp_path / "again.png")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "o.cpp.png").read_bytes()


def test_cpp_resize_matches_pillow_pixel_for_pixel(aoti_package, cpp_app, tmp_path):
    """--dump_input writes what the app feeds the model: Python's transform(load_image(...)) exactly, over
    sizes that round up, down, to even and stay, both pass orders, grey and RGB targets."""
    from gantk.data.transforms import transform
    _, package = aoti_package
    for i, (w, h) in enumerate([(451, 300), (451, 301), (127, 98), (98, 127), (30, 90), (90, 30), (62, 14),
                                (13, 61), (5, 7), (3, 2), (64, 48)]):
        for nc in (3, 1):
            src, pre = tmp_path / f"{i}.png", tmp_path / f"{i}.{nc}.pre.png"
            chelsea(w, h).convert("RGB" if i % 2 else "L").save(src)
            run = subprocess.run([str(cpp_app), "--model", str(package), "--input", str(src), "--dump_input", str(pre),
                                  "--input_nc", str(nc), "--max_size", "0"], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            want = transform(load_image(src), "none", 0, 0, None, grayscale=nc == 1, base=4)
            want = ((want + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            got = np.asarray(Image.open(pre))
            assert got.reshape(want.shape).shape == want.shape and got.size == want.size, (w, h, nc)
            assert (got.reshape(want.shape) == want).all(), (w, h, nc)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_cpp_app_reads_jpeg_upright_by_its_exif_orientation_like_python(aoti_package, cpp_app, tmp_path, mode):
    """A non-square JPEG with each of the 8 EXIF orientations: the app feeds the model exactly Python's pixels
    (same decoder defaults, same turn), so a sideways photo is not translated sideways."""
    from gantk.data.transforms import transform
    _, package = aoti_package
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        src, pre = tmp_path / f"{orientation}.jpg", tmp_path / f"{orientation}.pre.png"
        chelsea(90, 52).convert(mode).save(src, quality=90, exif=exif)
        run = subprocess.run([str(cpp_app), "--model", str(package), "--input", str(src), "--dump_input", str(pre)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        want = transform(load_image(src), "none", 0, 0, None, base=4)
        want = ((want + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        got = np.asarray(Image.open(pre))
        assert got.shape == want.shape == ((88, 52, 3) if orientation >= 5 else (52, 88, 3)), orientation
        assert (got == want).all(), orientation
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "1.jpg").read_bytes()[:200])
    one_line_cpp_error(run_cpp(cpp_app, package, tmp_path / "bad.jpg", tmp_path / "o.png"), "not a readable JPEG")


def test_cpp_app_refuses_what_it_cannot_convert_in_one_line(aoti_package, cpp_app, tmp_path):
    _, package = aoti_package
    src = tmp_path / "in.png"
    chelsea(140, 60).save(src)
    one_line_cpp_error(run_cpp(cpp_app, package, src, tmp_path / "o.png"), "larger than the model's max_size 128")
    chelsea(60, 40).save(src)
    one_line_cpp_error(run_cpp(cpp_app, package, src, tmp_path / "o.png", "--input_nc", "2"), "2-channel")
    one_line_cpp_error(run_cpp(cpp_app, package, src, tmp_path / "o.png", "--multiple", "x"), "--multiple x")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    one_line_cpp_error(run_cpp(cpp_app, package, tmp_path / "bad.png", tmp_path / "o.png"), "not a PNG")
    assert not (tmp_path / "o.png").exists()


def test_cpp_app_grey_model_given_an_rgb_photo(cpp_app, tmp_path):
    """A 1-channel-input generator (sidecar gantk_arch.input_nc 1) fed the whole 451x300 RGB photo: luma as
    Pillow's convert("L"), 451 -> 452 px as Python, the same picture."""
    from gantk.export.aoti import export_aoti
    torch.manual_seed(0)
    spec = spec_for_generator(define_G(1, 3, 4, "resnet_6blocks", norm="instance").eval(), "cyclegan")
    package = export_aoti(spec, tmp_path / "grey.pt2", max_batch=2, max_size=512)
    assert json.loads((tmp_path / "grey.pt2.json").read_text())["gantk_arch"]["input_nc"] == 1
    src = tmp_path / "chelsea.png"
    chelsea().save(src)
    got, want = cpp_vs_python(cpp_app, package, src, tmp_path)
    assert got.shape == want.shape == (300, 452, 3)
    assert np.abs(got - want).max() <= 1


def test_fast_style_network_exports_like_the_gan_generators(tmp_path, photos):
    from gantk.nn.transformer import TransformerNet
    torch.manual_seed(0)
    net = TransformerNet()
    with torch.no_grad():  # a less trivial output range than the random init's
        net.deconv3.conv2d.weight.mul_(50)
    spec = spec_for_generator(net)
    assert spec.family == "fast_style" and spec.nz == 0
    manifest = run_export(spec, tmp_path, ["onnx", "onnx-fp16"], photos, [32, 44], log=lambda s: None)
    assert manifest["passed"]
    assert lint_tensorrt(load_onnx(tmp_path / "model.onnx")) == []
    odd = load_runner(tmp_path / "model.onnx")(torch.rand(1, 3, 33, 47) * 2 - 1)
    assert odd.shape == (1, 3, 33, 47)  # dynamic H/W, odd sizes included


def test_bicyclegan_generator_exports_with_latent_input(tmp_path, photos):
    from gantk.models.bicyclegan import define_bicycle_G
    torch.manual_seed(0)
    spec = spec_for_generator(define_bicycle_G(3, 3, 8, 4, netG="unet_128", norm="instance", where_add="all"))
    assert spec.family == "bicyclegan" and spec.input_names == ["input", "z"] and spec.multiple == 128
    manifest = run_export(spec, tmp_path, ["onnx", "aoti"], photos, [128, 256], max_batch=2, max_size=256,
                          log=lambda s: None)  # batch 2 at two sizes, fixed z, through ORT and AOTInductor
    assert manifest["passed"] and len(manifest["parity"]) == 2
    model = load_onnx(tmp_path / "model.onnx")
    assert [d.dim_param for d in model.graph.input[1].type.tensor_type.shape.dim] == ["batch", ""]
    assert lint_tensorrt(model) == []
    runner = load_runner(tmp_path / "model.onnx")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    a, b = runner(x, torch.zeros(1, 8)), runner(x, torch.ones(1, 8))
    assert np.abs(a - b).max() > 1e-3  # the latent code still steers the exported generator
    with pytest.raises(GantkError, match="needs a latent z"):
        runner(x)


@pytest.mark.parametrize("family", ["pix2pix", "fast_style"])
def test_aoti_parity_for_the_other_families(tmp_path, photos, family):
    """AOTInductor packages of the U-Net (BatchNorm, per-image statistics) and the fast-style network:
    batch 2 at two sizes, dynamic shapes."""
    if family == "pix2pix":
        spec, sizes, max_size = spec_for_generator(generator("unet_128", "batch"), "pix2pix", "batch"), [128, 256], 256
    else:
        from gantk.nn.transformer import TransformerNet
        torch.manual_seed(0)
        net = TransformerNet()
        with torch.no_grad():
            net.deconv3.conv2d.weight.mul_(50)
        spec, sizes, max_size = spec_for_generator(net), [32, 44], 64
    manifest = run_export(spec, tmp_path, ["aoti"], photos, sizes, max_batch=2, max_size=max_size, log=lambda s: None)
    assert manifest["passed"] and [r["input"] for r in manifest["parity"][0]["rows"]] == [
        f"2x3x{s}x{s}" for s in sizes]


def test_triton_configs_are_read_by_the_real_model_config_proto(tmp_path):
    """Valid text-format syntax in any of its forms parses (comments, repeated fields without brackets,
    scalar lists as repeated scalars); a misspelt field or broken syntax is a problem, not a crash."""
    folder = tmp_path / "repo" / "g"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"")
    (folder / "config.pbtxt").write_text(
        '# a comment\nname: "g" platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'input { name: "input" data_type: TYPE_FP32 dims: 3 dims: -1 dims: -1 }\n'
        'output: [{ name: "output", data_type: TYPE_FP32, dims: [3, -1, -1] }]\n'
        'dynamic_batching { }\n')
    assert check_model_repository(tmp_path / "repo") == []
    assert list(read_config(folder / "config.pbtxt").input[0].dims) == [3, -1, -1]
    for bad in ('max_batch_sizee: 4', 'name: "g" input { name: "input" '):
        (folder / "config.pbtxt").write_text(bad)
        problems = check_model_repository(tmp_path / "repo")
        assert len(problems) == 1 and "not a valid Triton model configuration" in problems[0]
