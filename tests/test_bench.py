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
                                         "ort-cuda"],
                          [1, 2], [32, 48], photos, "cpu", warmup=1, repeats=3, log=lambda s: None)
    rows = doc["results"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["backend"], r["batch"], r["size"]) for r in ok} == {
        (b, n, s) for b in ("eager", "channels_last", "winograd", "ort-cpu") for n in (1, 2) for s in (32, 48)}
    for r in ok:
        assert r["parity"] == "PASS" and r["max_abs"] < 1e-4
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["median_ms"])
        assert r["gflops_per_image"] > 0
    eager = [r for r in ok if r["backend"] == "eager"]
    assert all(r["speedup"] == 1.0 and r["max_abs"] == 0 for r in eager)
    # FLOPs scale with the pixel count (a conv net's FLOPs are linear in H*W)
    f = {r["size"]: r["gflops_per_image"] for r in eager}
    assert f[48] / f[32] == pytest.approx((48 / 32) ** 2, rel=1e-6)
    reasons = {r["backend"]: r["reason"] for r in rows if r["status"] == "unavailable"}
    assert set(reasons) == {"kernels", "trt-fp16", "ort-cuda"} and all(reasons.values())
    assert doc["environment"]["threads"] >= 1 and doc["environment"]["versions"]["torch"]


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
