"""gantk bench: every backend measured or listed with a reason; parity graded; results written."""
import json
import tempfile

import numpy as np
import pytest
import torch

import gantk.bench as bench
from gantk.acceleration import parse_options
from gantk.cli import main
from gantk.export import spec_for_generator
from gantk.export.parity import sample_photos
from gantk.models import define_G


@pytest.fixture(scope="module")
def photos():
    return sample_photos(2)


def small_spec():
    torch.manual_seed(0)
    return spec_for_generator(define_G(3, 3, 4, "resnet_6blocks", norm="instance"), "cyclegan")


def private_tmp(monkeypatch, path):
    """Temporary files of this process and of the ones it spawns go to `path`."""
    monkeypatch.setenv("TMPDIR", str(path))
    monkeypatch.setattr(tempfile, "tempdir", None)


def test_bench_measures_grades_and_lists_unavailable(photos, tmp_path, monkeypatch):
    private_tmp(monkeypatch, tmp_path)
    doc = bench.run_bench(small_spec(), ["channels_last", "winograd", "eager", "ort-cpu", "trt-fp16",
                                         "ort-cuda", "amp-bf16+channels_last+winograd", "compile-max-autotune"],
                          [1, 2], [32, 48], photos, "cpu", warmup=1, repeats=3, log=lambda s: None)
    rows = doc["results"]
    assert rows[0]["backend"] == "eager"  # the reference runs first, before any option changes the process
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["batch"], r["size"]) for r in ok} == {
        (b, n, s) for b in ("eager", "channels_last", "winograd", "ort-cpu", "amp-bf16+channels_last+winograd")
        for n in (1, 2) for s in (32, 48)}
    for r in ok:
        bf16 = r["backend"].startswith("amp-bf16")
        assert r["precision"] == ("bf16" if bf16 else "fp32") and r["mfu"] is None  # no data-sheet peak for a CPU
        assert r["parity"] == "PASS" and (r["psnr"] >= 32 if bf16 else r["max_abs"] < 1e-4)
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["median_ms"])
        assert r["gflops_per_image"] > 0
    eager = [r for r in ok if r["backend"] == "eager"]
    assert all(r["speedup"] == 1.0 and r["max_abs"] == 0 for r in eager)
    # FLOPs scale with the pixel count (a conv net's FLOPs are linear in H*W)
    f = {r["size"]: r["gflops_per_image"] for r in eager}
    assert f[48] / f[32] == pytest.approx((48 / 32) ** 2, rel=1e-6)
    reasons = {r["backend"]: r["reason"] for r in rows if r["status"] == "unavailable"}
    assert set(reasons) == {"trt-fp16", "ort-cuda", "compile-max-autotune"} and all(reasons.values())
    # the fused ops run on CPU as they do for train/translate --kernels triton (not timed here: the tests run
    # Triton through its interpreter)
    runner, precision, _ = bench.make_runner("triton", small_spec(), torch.device("cpu"), None, 1, 32)
    assert precision == "fp32" and runner.backend == "pytorch-triton"
    assert doc["environment"]["threads"] >= 1 and doc["environment"]["versions"]["torch"]
    assert not list(tmp_path.glob("gantk-bench-*"))  # the exported ONNX artifacts are removed


def test_cpu_peak_memory_is_per_row():
    """A row's peak counts what that row held: 256 MB held in one row shows there, and no longer in the next."""
    mem = bench.PeakMemory(torch.device("cpu"))
    if not mem.per_row:
        pytest.skip("the peak-RSS count cannot be restarted here (/proc/self/clear_refs: Linux only)")
    mem.restart()
    base = mem.mb()
    t = torch.ones(64 * 2**20)  # 256 MB, every page written
    held = mem.mb()
    del t
    mem.restart()
    assert held - base == pytest.approx(256, abs=16)
    assert mem.mb() < base + 32


def test_isolate_measures_each_row_in_a_fresh_process(photos, tmp_path, monkeypatch):
    """--isolate: each row runs in a spawned process, so 512 MB the caller holds counts in every row measured
    in-process and in none measured in isolation; speed-ups and parity are still against eager."""
    if not bench.PeakMemory(torch.device("cpu")).per_row:
        pytest.skip("the peak-RSS count cannot be restarted here (/proc/self/clear_refs: Linux only)")
    private_tmp(monkeypatch, tmp_path)
    ballast = torch.ones(128 * 2**20)  # 512 MB, every page written
    kw = dict(warmup=1, repeats=2, log=lambda s: None)
    shared = bench.run_bench(small_spec(), ["eager"], [1], [32], photos, "cpu", **kw)
    doc = bench.run_bench(small_spec(), ["winograd", "eager", "trt-fp16"], [1, 2], [32], photos, "cpu", isolate=True,
                          **kw)
    del ballast
    rows = {(r["backend"], r.get("batch")): r for r in doc["results"]}
    assert doc["config"]["isolate"] and "fresh process" in doc["environment"]["peak_memory"]
    assert rows["trt-fp16", None]["status"] == "unavailable"
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert [(r["backend"], r["batch"]) for r in ok] == [("eager", 1), ("eager", 2), ("winograd", 1), ("winograd", 2)]
    in_process = shared["results"][0]["peak_mem_mb"]
    for r in ok:
        assert 0 < r["peak_mem_mb"] < in_process - 384, (r["peak_mem_mb"], in_process)
        assert r["parity"] == "PASS" and r["precision"] == "fp32"
        assert r["speedup"] == pytest.approx(rows["eager", r["batch"]]["median_ms"] / r["median_ms"])
    assert not list(tmp_path.glob("gantk-bench-*"))
    with pytest.raises(bench.GantkError, match="--interleave and --isolate"):
        bench.run_bench(small_spec(), ["eager"], [1], [32], photos, "cpu", interleave=True, isolate=True, **kw)


def test_wrong_backend_is_reported_as_fail(photos, monkeypatch):
    real = bench.make_runner

    def broken(name, spec, *a, **k):
        runner, precision, build_s = real(name, spec, *a, **k)
        if name == "channels_last":  # a fast but wrong backend: off by 2 grey levels everywhere
            run = runner.fn
            runner.fn = lambda *xs: run(*xs) + 4 / 255
        return runner, precision, build_s
    monkeypatch.setattr(bench, "make_runner", broken)
    doc = bench.run_bench(small_spec(), ["eager", "channels_last"], [1], [32], photos, "cpu", warmup=0,
                          repeats=1, log=lambda s: None)
    grades = {r["backend"]: (r["parity"], round(r["psnr"], 1)) for r in doc["results"]}
    assert grades["eager"][0] == "PASS" and grades["channels_last"] == ("FAIL", 42.1)


def test_interleave_alternates_backends_and_pairs_the_ratios(photos, monkeypatch):
    """--interleave: after each backend's first call and warm-ups, the timed calls go round the backends in
    turn; the speed-up is the median of the paired per-round ratios, recomputed here from the raw times."""
    real, calls = bench.make_runner, []

    def logged(name, spec, *a, **k):
        runner, precision, build_s = real(name, spec, *a, **k)
        run = runner.run_torch
        runner.run_torch = lambda *xs: calls.append(name) or run(*xs)
        return runner, precision, build_s
    monkeypatch.setattr(bench, "make_runner", logged)
    doc = bench.run_bench(small_spec(), ["channels_last", "eager", "ort-cpu"], [1], [32, 48], photos, "cpu",
                          warmup=1, repeats=4, log=lambda s: None, interleave=True)
    rows = {(r["backend"], r["size"]): r for r in doc["results"]}
    assert doc["config"]["interleave"] and len(rows) == 6 and all(r["runs"] == 4 for r in rows.values())
    # per size: each backend's first call and warm-up, then 4 rounds of one call each, eager first
    order = ["eager", "channels_last", "ort-cpu"]
    assert calls == 2 * ([n for n in order for _ in range(2)] + order * 4)
    for s in (32, 48):
        eager = np.array(rows["eager", s]["times_ms"])
        for name in ("channels_last", "ort-cpu"):
            r = rows[name, s]
            assert r["speedup"] == pytest.approx(float(np.median(eager / np.array(r["times_ms"]))))
            assert r["median_ms"] == pytest.approx(float(np.median(r["times_ms"]))) and r["parity"] == "PASS"
        assert rows["eager", s]["speedup"] == 1.0
    # memory is not compared: every backend's runtime is held during every call
    assert all(r["peak_mem_mb"] is None for r in rows.values()) and "not measured" in doc["environment"]["peak_memory"]
    assert "interleaved" in bench.markdown(doc)


@pytest.mark.parametrize("interleave", [False, True])
def test_budget_cuts_runs_to_what_it_allows(photos, interleave):
    """A budget that no call fits gives one timed run per row (and no warm-up), in both modes."""
    doc = bench.run_bench(small_spec(), ["eager", "channels_last"], [1], [32], photos, "cpu", warmup=2, repeats=5,
                          budget_s=1e-6, log=lambda s: None, interleave=interleave)
    assert [(r["backend"], r["runs"], len(r["times_ms"])) for r in doc["results"]] == [
        ("eager", 1, 1), ("channels_last", 1, 1)]


def test_cli_bench_writes_json_markdown_plot(tmp_path, capsys):
    out = tmp_path / "res" / "b"
    assert main(["bench", "--netG", "resnet_6blocks", "--ngf", "4", "--backends", "eager,ort-cpu,trt-fp32",
                 "--sizes", "32", "--batches", "1", "--repeats", "2", "--device", "cpu", "--interleave",
                 "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["config"]["interleave"] and "--interleave" in doc["config"]["command"]
    assert doc["model"]["gantk_arch"]["netG"] == "resnet_6blocks"
    md = out.with_suffix(".md").read_text()
    assert "| ort-cpu | 1 | 32 | 2 |" in md and "trt-fp32 | | | | unavailable" in md
    assert out.with_suffix(".png").stat().st_size > 1000
    assert main(["bench", "--netG", "resnet_6blocks", "--backends", "warp-drive"]) == 2
    assert "warp-drive" in capsys.readouterr().err


def test_backend_names_combine_options_and_reject_nonsense():
    """Options of the PyTorch model join with '+' (the one --kernels vocabulary); exported runtimes stand
    alone; nonsense fails early."""
    assert parse_options("eager") == [] and parse_options("amp+compile+triton") == ["amp", "compile", "triton"]
    bench.check_backend("ort-cpu")
    bench.check_backend("channels_last+winograd")
    for bad in ("amp+amp-bf16", "triton+winograd", "compile+compile-max-autotune", "aoti+compile", "amp+amp", "fp8",
                "kernels"):
        with pytest.raises(bench.GantkError, match="--backends"):
            bench.check_backend(bad)
    with pytest.raises(bench.GantkError, match="warp"):  # before any backend is built or timed
        bench.run_bench(small_spec(), ["eager", "warp"], [1], [32], sample_photos(1), "cpu", log=lambda s: None)


def test_gpu_peaks_from_data_sheets():
    """The names torch reports pick the right data-sheet row (variants before the family), and every row
    keeps the relations the data sheets state: dense bf16 == fp16, TF32 at half the 16-bit rate, fp32 (CUDA
    cores) below TF32; the H200 is an H100 SXM with faster memory; more HBM bandwidth for the newer parts."""
    rows = {n: bench.gpu_peaks(n) for n in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
                                            "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB",
                                            "NVIDIA L40S", "NVIDIA L4")}
    for name, (tbps, flops) in rows.items():
        assert flops["bf16"] == flops["fp16"], name
        assert flops["tf32"] * 2 == pytest.approx(flops["fp16"], rel=0.02), name
        assert flops["fp32"] < flops["tf32"], name
    assert rows["NVIDIA H200"][1] == rows["NVIDIA H100 80GB HBM3"][1]
    bandwidth = [rows[n][0] for n in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe")]
    assert bandwidth == sorted(bandwidth, reverse=True)
    bandwidth = [rows[n][0] for n in ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB")]
    assert bandwidth == sorted(bandwidth, reverse=True) and len(set(bandwidth)) == 3
    assert len({rows[n][1]["fp16"] for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")}) == 3
    assert rows["NVIDIA L4"] != rows["NVIDIA L40S"]  # "L4" is not read as "L40S"
    assert bench.gpu_peaks("NVIDIA GeForce RTX 4090") is None


def test_bench_records_lpips_and_fid_change_against_eager(photos):
    """Given (random) LPIPS weights and reference features, every row records the LPIPS of its output against
    eager's (0 for eager itself) and each backend its FID change (exactly 0 for eager, whose outputs are the
    reference outputs; tiny for ONNX Runtime's fp32 graph); the markdown shows both. A 2x2 average pool stands
    in for Inception (the same Fréchet distance on 12-d features) to keep the test fast."""
    from gantk.export.parity import Comparator, Quality
    from gantk.metrics import fid_from_features
    from gantk.nn.lpips import load_lpips
    features = lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)  # noqa: E731
    refs = features(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).double().numpy()
    quality = Quality(load_lpips("alex", "random", "random"), features, refs, record={"fid": {"reference": "noise"}})
    spec = small_spec()
    doc = bench.run_bench(spec, ["eager", "ort-cpu"], [1, 2], [32], photos, "cpu", warmup=0, repeats=1,
                          log=lambda s: None, quality=quality)
    lp = {(r["backend"], r["batch"]): r["lpips"] for r in doc["results"]}
    assert lp[("eager", 1)] == lp[("eager", 2)] == 0 and all(0 <= v < 1e-8 for v in lp.values())
    fid = doc["quality"]["fid_change"]
    assert fid["eager"]["change"] == 0 and fid["eager"]["images"] == 3 and fid["eager"]["reference_images"] == 4
    compare = Comparator(spec, photos)  # eager's outputs of both batches, pooled
    eager = torch.from_numpy(np.concatenate([compare.reference(1, 32), compare.reference(2, 32)]))
    assert fid["eager"]["eager"] == pytest.approx(fid_from_features(features(eager).double().numpy(), refs), rel=1e-9)
    assert fid["ort-cpu"]["eager"] == fid["eager"]["eager"] and abs(fid["ort-cpu"]["change"]) < 1e-4 * fid["eager"]["eager"]
    md = bench.markdown(doc)
    assert "| PSNR dB | LPIPS | parity |" in md and "- FID change of ort-cpu: " in md
