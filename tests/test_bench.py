"""gantk bench: every backend measured or listed with a reason; parity graded; results written."""
import json

import pytest
import torch

import gantk.bench as bench
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


def test_bench_measures_grades_and_lists_unavailable(photos):
    doc = bench.run_bench(small_spec(), ["eager", "channels_last", "winograd", "ort-cpu", "kernels", "trt-fp16",
                                         "ort-cuda", "amp-bf16+channels_last+winograd", "amp+compile+kernels"],
                          [1, 2], [32, 48], photos, "cpu", warmup=1, repeats=3, log=lambda s: None)
    rows = doc["results"]
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
    assert set(reasons) == {"kernels", "trt-fp16", "ort-cuda", "amp+compile+kernels"} and all(reasons.values())
    assert reasons["amp+compile+kernels"] == reasons["kernels"]
    assert doc["environment"]["threads"] >= 1 and doc["environment"]["versions"]["torch"]


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


def test_wrong_backend_is_reported_as_fail(photos, monkeypatch):
    real = bench.prepare

    def broken(name, spec, *a, **k):
        p = real(name, spec, *a, **k)
        if name == "channels_last":  # a fast but wrong backend: off by 2 grey levels everywhere
            run = p.run
            p.run = lambda *xs: run(*xs) + 4 / 255
        return p
    monkeypatch.setattr(bench, "prepare", broken)
    doc = bench.run_bench(small_spec(), ["eager", "channels_last"], [1], [32], photos, "cpu", warmup=0,
                          repeats=1, log=lambda s: None)
    grades = {r["backend"]: (r["parity"], round(r["psnr"], 1)) for r in doc["results"]}
    assert grades["eager"][0] == "PASS" and grades["channels_last"] == ("FAIL", 42.1)


def test_cli_bench_writes_json_markdown_plot(tmp_path, capsys):
    out = tmp_path / "res" / "b"
    assert main(["bench", "--netG", "resnet_6blocks", "--ngf", "4", "--backends", "eager,ort-cpu,trt-fp32",
                 "--sizes", "32", "--batches", "1", "--repeats", "2", "--device", "cpu", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["model"]["gantk_arch"]["netG"] == "resnet_6blocks"
    md = out.with_suffix(".md").read_text()
    assert "| ort-cpu | 1 | 32 | 2 |" in md and "trt-fp32 | | | | unavailable" in md
    assert out.with_suffix(".png").stat().st_size > 1000
    assert main(["bench", "--netG", "resnet_6blocks", "--backends", "warp-drive"]) == 2
    assert "warp-drive" in capsys.readouterr().err


def test_backend_names_combine_options_and_reject_nonsense():
    """Options of the PyTorch model join with '+'; exported artifacts stand alone; nonsense fails early."""
    assert bench.backend_parts("eager") == [] and bench.backend_parts("ort-cpu") == ["ort-cpu"]
    assert bench.backend_parts("amp+compile+kernels") == ["amp", "compile", "kernels"]
    for bad in ("amp+amp-bf16", "kernels+winograd", "compile+compile-max-autotune", "aoti+compile", "amp+amp", "fp8"):
        with pytest.raises(bench.GantkError, match="--backends"):
            bench.backend_parts(bad)
    with pytest.raises(bench.GantkError, match="warp"):  # before any backend is built or timed
        bench.run_bench(small_spec(), ["eager", "warp"], [1], [32], sample_photos(1), "cpu", log=lambda s: None)


def test_gpu_peaks_from_data_sheets():
    """HBM bandwidth and dense tensor-core peaks (MFU's denominator) by the names torch reports."""
    assert bench.gpu_peaks("NVIDIA H100 80GB HBM3") == (3.35, {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4})
    assert bench.gpu_peaks("NVIDIA H200")[0] == 4.8 and bench.gpu_peaks("NVIDIA H200")[1]["bf16"] == 989.4
    assert bench.gpu_peaks("NVIDIA H100 PCIe")[1]["bf16"] == 756.0
    assert bench.gpu_peaks("NVIDIA A100 80GB PCIe")[0] == 1.935 and bench.gpu_peaks("NVIDIA A100-SXM4-40GB")[0] == 1.555
    assert bench.gpu_peaks("NVIDIA GeForce RTX 4090") is None
