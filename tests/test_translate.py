"""Given a trained or reference generator, `gantk translate` writes translated images and a page."""
import pytest
import torch
from PIL import Image

from conftest import tiny_args
from gantk.cli import main
from gantk.io import pil_to_tensor
from gantk.models import define_G
from gantk.translate import _tiled, tile_starts, tiled_forward


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
