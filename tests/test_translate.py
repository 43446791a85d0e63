"""Given a trained or reference generator, `gantk translate` writes translated images and a page."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_args
from gantk.cli import main
from gantk.errors import GantkError
from gantk.io import pil_to_tensor
from gantk.models import define_G
from gantk.translate import _tiled, fitted_tile, output_stems, tile_starts, tiled_forward, translate_images


@pytest.fixture(scope="module")
def trained(sample_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt")
    assert main(tiny_args(sample_data["unaligned"], ckpt, "tr", max_iters=2)) == 0
    return ckpt


def test_translate_experiment_test_set(trained, sample_data, tmp_path):
    out = tmp_path / "out"
    assert main(["translate", "--name", "tr", "--checkpoints_dir", str(trained),
                 "--dataroot", str(sample_data["unaligned"]), "--output", str(out)]) == 0
    fakes = sorted((out / "images").glob("*_fake.png"))
    assert len(fakes) == 8 and Image.open(fakes[0]).size == (32, 32)
    page = (out / "index.html").read_text()
    assert "000_real.png" in page and "000_fake.png" in page


def test_translate_reverse_direction_single_file_with_reference_weights(trained, sample_data, tmp_path):
    photo = sample_data["unaligned"] / "testB" / "003.png"
    out = tmp_path / "o"
    assert main(["translate", "--weights", str(trained / "tr" / "latest_net_G_B.pth"),
                 "--input", str(photo), "--output", str(out)]) == 0  # architecture inferred from the file
    assert [p.name for p in sorted((out / "images").iterdir())] == ["003_fake.png", "003_real.png"]


def test_tile_starts_cover_with_overlap():
    for length, tile, ov in [(256, 128, 32), (300, 128, 64), (100, 128, 32), (129, 128, 8)]:
        starts = tile_starts(length, tile, ov)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - ov for a, b in zip(starts, starts[1:]))


def test_fitted_tiles_cover_with_the_same_count_and_fewer_pixels():
    """4096 px in 512 px tiles (overlap 32): 9 tiles either way, 484 px each instead of 512 (hand-computed:
    ceil((4096 + 8 * 32) / 9) = 484), so 6% instead of 12.5% of the pixels are computed twice."""
    assert fitted_tile(4096, 512, 32, 4) == 484 and fitted_tile(200, 512, 32, 4) == 200
    for length, tile, ov, m in [(4096, 512, 32, 4), (1000, 256, 32, 4), (300, 256, 64, 4), (4100, 1024, 32, 8)]:
        fit = fitted_tile(length, tile, ov, m)
        starts, before = tile_starts(length, fit, ov), tile_starts(length, tile, ov)
        assert fit % m == 0 and fit <= tile and len(starts) == len(before)
        assert starts[0] == 0 and starts[-1] + fit == length
        assert all(a + fit - b >= ov for a, b in zip(starts, starts[1:]))  # every seam still overlaps enough


def test_tiled_matches_whole_image_on_2x_image():
    """256 px photo in 128 px tiles (64 px overlap) through a random-init resnet_6blocks (ngf 8), with
    InstanceNorm statistics shared by all tiles and measured on the photo scaled to 128 px: measured max
    |err| 0.51, mean 0.058 on [-1, 1] (per-tile statistics: max 1.08, mean 0.136). With the statistics
    pass at full size (--tile_stats_size >= the image) that pass is the output: exact."""
    from skimage import data
    torch.manual_seed(0)
    x = pil_to_tensor(Image.fromarray(data.astronaut()).resize((256, 256)))[None]
    g = define_G(3, 3, 8, "resnet_6blocks", norm="instance").eval()
    with torch.no_grad():
        full = g(x)
        err = (tiled_forward(g, x, 128, 64, stats_size=128) - full).abs()
        assert torch.equal(tiled_forward(g, x, 128, 64, stats_size=256), full)  # stats pass at full size: no tiles
        naive = (_tiled(g, x, 128, 64, 4) - full).abs()
    assert err.max() < 0.6 and err.mean() < 0.07
    assert naive.mean() > 2 * err.mean()
    assert isinstance(g.model[2], torch.nn.InstanceNorm2d)  # the norms were put back


def test_tiling_without_norms_differs_only_next_to_tile_borders():
    """A net without norms (receptive field 3x3): tiled output equals the whole-image pass exactly wherever
    every tile covering a pixel holds its 3x3 neighbourhood; only pixels at inner tile borders (zero padding
    there) differ, down-weighted by the ramps."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        err = (tiled_forward(net, x, 32, 16) - net(x)).abs()[0].amax(0)
    clean = torch.ones(64, 96, dtype=torch.bool)
    for axis, length in ((0, 64), (1, 96)):
        for start in tile_starts(length, 32, 16):
            for edge in (start, start + 31):  # a tile's first/last row or column, unless it is the image's
                if 0 < edge < length - 1:
                    clean.index_fill_(axis, torch.tensor([edge]), False)
    assert clean.float().mean() > 0.8
    assert err[clean].max() < 1e-6
    assert 0 < err.max() < 0.05


def test_translate_needs_an_input(trained, capsys):
    assert main(["translate", "--name", "tr", "--checkpoints_dir", str(trained)]) == 2
    assert "give --input" in capsys.readouterr().err


def test_inputs_sharing_a_stem_or_a_name_keep_their_own_outputs(trained, sample_data, tmp_path):
    """x.png and x.jpg, a/y.png and b/y.png (four different photos) give four different fakes, each on the page."""
    src, inp = sample_data["unaligned"] / "testA", tmp_path / "in"
    for i, rel in enumerate(["x.png", "x.jpg", "a/y.png", "b/y.png"]):
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(src / f"00{i}.png").save(inp / rel, quality=95)
    out = tmp_path / "out"
    assert main(["translate", "--name", "tr", "--checkpoints_dir", str(trained), "--input", str(inp),
                 "--output", str(out)]) == 0
    stems = ["a/y", "b/y", "x_jpg", "x_png"]
    fakes = sorted((out / "images").rglob("*_fake.png"))
    assert [f.relative_to(out / "images").as_posix() for f in fakes] == [f"{s}_fake.png" for s in stems]
    pixels = [pil_to_tensor(Image.open(f).convert("RGB")) for f in fakes]
    assert all(not torch.equal(p, q) for i, p in enumerate(pixels) for q in pixels[i + 1:])
    page = (out / "index.html").read_text()
    assert all(f"images/{s}_fake.png" in page and f"images/{s}_real.png" in page for s in stems)


def test_output_stems_unique_stable_and_readable():
    names = ["a/y.png", "b/y.png", "x.jpg", "x.png", "X_png.png", "z.png"]
    assert output_stems(names) == {"a/y.png": "a/y", "b/y.png": "b/y", "x.jpg": "x_jpg", "x.png": "x_png",
                                   "X_png.png": "X_png_png_2", "z.png": "z"}  # a name taken ignoring case: _2


def test_num_test_minus_one_translates_all_and_a_cut_is_logged(trained, sample_data, tmp_path, caplog):
    args = ["translate", "--name", "tr", "--checkpoints_dir", str(trained), "--dataroot", str(sample_data["unaligned"])]
    assert main(args + ["--output", str(tmp_path / "all"), "--num_test", "-1"]) == 0
    assert len(list((tmp_path / "all" / "images").glob("*_fake.png"))) == 8  # the last one too
    caplog.set_level("INFO", "gantk.translate")
    assert main(args + ["--output", str(tmp_path / "three"), "--num_test", "3"]) == 0
    assert len(list((tmp_path / "three" / "images").glob("*_fake.png"))) == 3
    assert "translating 3 of 8 images" in caplog.text


@pytest.mark.parametrize("option,value", [("--num_test", "0"), ("--num_test", "-2"), ("--load_size", "0"),
                                          ("--crop_size", "-8"), ("--tile_stats_size", "0"), ("--tile", "-5"),
                                          ("--tile_overlap", "-1"), ("--n_samples", "0"), ("--tile", "16")])
def test_bad_translate_options_fail_before_loading(sample_data, tmp_path, capsys, option, value):
    """Checked before the generator is looked for (there is none: its error would come first otherwise)."""
    assert main(["translate", "--name", "none", "--checkpoints_dir", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--dataroot", str(sample_data["unaligned"]), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gantk: error: ") and option in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["translate", "stylize"])
@pytest.mark.parametrize("where", ["file", "inside_file"])
def test_unwritable_output_fails_first_in_one_line(sample_data, tmp_path, capsys, command, where):
    """--output (translate) or --out (stylize) that is a file where a folder goes: one line, before any work."""
    (tmp_path / "f.txt").write_text("not a folder")
    photo = str(sample_data["unaligned"] / "testA" / "000.png")
    if command == "translate":
        option, target = "--output", tmp_path / ("f.txt" if where == "file" else "f.txt/out")
        args = ["translate", "--name", "none", "--checkpoints_dir", str(tmp_path), "--input", photo]
    else:
        option, target = "--out", tmp_path / ("f.txt/o.png" if where == "file" else "f.txt/sub/o.png")
        args = ["stylize", "--content", photo, "--style", photo, "--vgg-weights", str(tmp_path / "missing.pth")]
    assert main(args + [option, str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gantk: error: {option} {target}: ") and "f.txt" in err[0]


def test_out_of_memory_suggests_tiles(tmp_path):
    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    items = [("big.png", torch.zeros(3, 8, 8), None)]
    with pytest.raises(GantkError, match=r"^big.png: out of memory; translate in tiles, e.g. --tile 512$"):
        translate_images(Hungry(), items, tmp_path, "t")


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_metrics_score_aligned_pairs_like_scikit_image_on_the_written_files(trained, sample_data, tmp_path, capsys):
    """--metrics on A|B pairs: each row of translate.json (and the page) holds PSNR/SSIM/MAE/LPIPS of the written
    _fake against the written _target, as scikit-image (PSNR, SSIM), numpy (MAE) and LPIPS compute them from the
    files, and the means."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from gantk.metrics import lpips
    from gantk.nn.lpips import load_lpips
    out = tmp_path / "out"
    assert main(["translate", "--name", "tr", "--checkpoints_dir", str(trained), "--dataroot",
                 str(sample_data["aligned"]), "--output", str(out), "--num_test", "3", "--metrics",
                 "--lpips-weights", "random", "--lpips-backbone", "random"]) == 0
    record = json.loads((out / "translate.json").read_text())["metrics"]
    net = load_lpips("alex", "random", "random")
    assert record["targets"] == "A|B pairs" and len(record["per_image"]) == 3
    for name, s in record["per_image"].items():
        fake, target = (_rgb(out / "images" / f"{Path(name).stem}_{k}.png") for k in ("fake", "target"))
        assert s["psnr"] == pytest.approx(peak_signal_noise_ratio(target, fake, data_range=255), rel=1e-9)
        assert s["ssim"] == pytest.approx(structural_similarity(target, fake, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=255, channel_axis=-1), rel=1e-6)
        assert s["mae"] == pytest.approx(np.abs(fake.astype(float) - target).mean(), rel=1e-9)
        assert s["lpips"] == pytest.approx(lpips(net, fake, target), rel=1e-6)
    assert record["mean"]["psnr"] == pytest.approx(np.mean([s["psnr"] for s in record["per_image"].values()]))
    assert record["protocol"]["lpips_net"] == "alex"
    page = (out / "index.html").read_text()
    assert f"mean PSNR {record['mean']['psnr']:.2f} dB" in page and page.count("SSIM ") == 2 + 3  # <title> and <h1>, one per row
    assert f"vs their targets: PSNR {record['mean']['psnr']:.2f} dB" in capsys.readouterr().out


def test_metrics_against_a_reference_folder_matched_by_name(trained, sample_data, tmp_path):
    """--reference DIR: x.png's target is DIR/x.jpg (any suffix), written beside it as _target and scored."""
    from skimage.metrics import peak_signal_noise_ratio
    from gantk.data.sample import vintage
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir()
    for f in sorted((sample_data["unaligned"] / "testA").glob("*.png"))[:4]:
        Image.fromarray(vintage(_rgb(f))).save(ref / f"{f.stem}.bmp")
    assert main(["translate", "--name", "tr", "--checkpoints_dir", str(trained), "--input",
                 str(sample_data["unaligned"] / "testA"), "--num_test", "4", "--output", str(out), "--metrics",
                 "--reference", str(ref)]) == 0
    record = json.loads((out / "translate.json").read_text())["metrics"]
    assert record["targets"] == str(ref) and "lpips" not in record["mean"] and len(record["per_image"]) == 4
    for name, s in record["per_image"].items():
        target = _rgb(out / "images" / f"{Path(name).stem}_target.png")
        assert np.array_equal(target, _rgb(ref / f"{Path(name).stem}.bmp"))
        fake = _rgb(out / "images" / f"{Path(name).stem}_fake.png")
        assert s["psnr"] == pytest.approx(peak_signal_noise_ratio(target, fake, data_range=255), rel=1e-9)


def test_metrics_without_targets_fail_in_one_line_before_any_work(trained, sample_data, tmp_path, capsys):
    ref = tmp_path / "ref"
    ref.mkdir()
    Image.new("RGB", (32, 32)).save(ref / "000.png")
    Image.new("RGB", (40, 32)).save(ref / "001.png")
    base = ["translate", "--name", "tr", "--checkpoints_dir", str(trained), "--output", str(tmp_path / "out")]
    testA = ["--input", str(sample_data["unaligned"] / "testA")]
    for args, needle in [(testA + ["--metrics"], "--metrics needs targets"),
                         (testA + ["--reference", str(ref)], "no image named like 6 of the 8 inputs"),
                         (testA + ["--num_test", "2", "--reference", str(ref)], "001.png: 40x32 px, but its input"),
                         (["--dataroot", str(sample_data["aligned"]), "--reference", str(ref)], "A|B pairs"),
                         (testA + ["--lpips-weights", "random"], "apply to --metrics"),
                         (["--dataroot", str(sample_data["aligned"]), "--metrics", "--lpips-weights", "random",
                           "--lpips-backbone", "random", "--preprocess", "none", "--lpips-net", "vgg"], None)]:
        code = main(base + args)
        if needle is None:  # 32 px pairs are large enough for vgg (16 px)
            assert code == 0
            continue
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and "\n" not in err, err
        assert not (tmp_path / "out").exists()


def test_tiled_benchmark_sets_each_tile_size_against_the_whole_image(tmp_path):
    """benchmarks/tiled.py (small sizes): a row per whole size and per tile size, cost per megapixel from its
    own seconds, 'vs whole' against the whole image at the first --whole size with the same kernels."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tiled.py"
    out = subprocess.run([sys.executable, str(script), "--whole", "64", "--large", "192", "--tile", "64", "128",
                          "--stats", "64", "--kernels", "none", "--repeats", "1", "--out", str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["size"], r["tile"]) for r in rows] == [(64, 0), (192, 64), (192, 128)]
    assert rows[1]["tiles"] > rows[2]["tiles"] > 1 and rows[1]["tile_side"] <= 64
    for r in rows:
        assert r["s_per_mpix"] == pytest.approx(r["seconds"] / (r["size"] ** 2 / 1e6))
    md = (tmp_path / "t.md").read_text()
    assert f"| {rows[2]['s_per_mpix'] / rows[0]['s_per_mpix']:.2f}x |" in md and "whole 64 px image" in md
