"""Tests for gantk.data.sample (offline sample data sets)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage")

from gantk.data import sample  # noqa: E402

SIZE = 64


def _build(root, seed=0):
    return sample.build_sample_data(root, seed=seed, size=SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(folder: Path) -> np.ndarray:
    """All PNGs of a folder as one float array (N, H, W, 3) in [0, 1]."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]) / 255.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("sample"))


def test_layout_and_counts(built):
    assert built["unaligned"].name == "photo2vintage"
    assert built["aligned"].name == "edges2photos"
    for key, counts in (("unaligned", sample.UNALIGNED_COUNTS), ("aligned", sample.ALIGNED_COUNTS)):
        root = built[key]
        assert (root / "README.txt").read_text().strip()
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(counts)
        for split, n in counts.items():
            assert sorted(p.name for p in (root / split).iterdir()) == [f"{i:03d}.png" for i in range(n)]
    assert sample.UNALIGNED_COUNTS == {"trainA": 40, "trainB": 40, "testA": 8, "testB": 8}
    assert sample.ALIGNED_COUNTS == {"train": 40, "val": 4, "test": 8}


def test_image_sizes(built):
    for split in sample.UNALIGNED_COUNTS:
        for p in (built["unaligned"] / split).glob("*.png"):
            with Image.open(p) as im:
                assert (im.size, im.mode) == ((SIZE, SIZE), "RGB")
    for split in sample.ALIGNED_COUNTS:
        for p in (built["aligned"] / split).glob("*.png"):
            with Image.open(p) as im:
                assert (im.size, im.mode) == ((2 * SIZE, SIZE), "RGB")


def test_deterministic(built, tmp_path):
    same = _build(tmp_path / "same", seed=0)
    other = _build(tmp_path / "other", seed=1)
    for key in ("unaligned", "aligned"):
        ref = _files(built[key])
        assert _files(same[key]) == ref
        differ = _files(other[key])
        assert differ.keys() == ref.keys()
        assert sum(differ[k] != ref[k] for k in ref if k.endswith(".png")) > 0.9 * (len(ref) - 1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_domains_differ(built, split):
    a, b = _load(built["unaligned"] / f"{split}A"), _load(built["unaligned"] / f"{split}B")
    # Sepia toning collapses each image onto (nearly) one chromaticity: the
    # within-image spread of r/(r+g+b), b/(r+g+b) drops by an order of magnitude.
    def chroma_spread(x):
        c = x / (x.sum(-1, keepdims=True) + 1e-3)
        return c.reshape(len(x), -1, 3).std(axis=1).mean()

    assert chroma_spread(b) < 0.3 * chroma_spread(a)
    # Softer contrast and a warm cast.
    assert b.std(axis=(1, 2, 3)).mean() < 0.85 * a.std(axis=(1, 2, 3)).mean()
    assert (b[..., 0] - b[..., 2]).mean() > 0.1


def test_edges_are_dark_lines_on_white(built):
    for split in sample.ALIGNED_COUNTS:
        for p in sorted((built["aligned"] / split).glob("*.png")):
            pair = np.asarray(Image.open(p).convert("RGB"))
            edges, photo = pair[:, :SIZE], pair[:, SIZE:]
            assert set(np.unique(edges)) <= {0, 255}
            dark = (edges == 0).all(-1).mean()
            assert 0.01 < dark < 0.4, (p, dark)
            assert photo.std() > 10 and np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 1  # a colour photo


def test_train_and_test_sources_disjoint():
    import skimage.data

    assert sample.TRAIN_SOURCES and sample.TEST_SOURCES
    assert set(sample.TRAIN_SOURCES).isdisjoint(sample.TEST_SOURCES)
    data_dir = Path(skimage.data.__file__).parent
    for name in sample.TRAIN_SOURCES + sample.TEST_SOURCES:
        assert (data_dir / name).is_file(), f"{name} must ship with scikit-image (no download)"


def test_second_call_is_noop(built):
    before = {p: p.stat().st_mtime_ns for p in built["unaligned"].parent.rglob("*")}
    again = _build(built["unaligned"].parent)
    assert again == built
    assert {p: p.stat().st_mtime_ns for p in built["unaligned"].parent.rglob("*")} == before


def test_incomplete_set_is_rebuilt(tmp_path):
    paths = _build(tmp_path)
    ref = _files(paths["unaligned"])
    (paths["unaligned"] / "trainB" / "007.png").unlink()
    (paths["unaligned"] / "trainB" / "stale.png").write_bytes(b"junk")
    _build(tmp_path)
    assert _files(paths["unaligned"]) == ref


def test_missing_scikit_image(monkeypatch, tmp_path):
    for mod in ("skimage", "skimage.data", "skimage.feature"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(RuntimeError, match="pip install scikit-image"):
        sample.build_sample_data(tmp_path)


def test_vintage_targets_are_the_known_translation(sample_data, tmp_path):
    """The demo's quality score compares translations with vintage(photo), the sample set's own rule."""
    photos = sample_data["unaligned"] / "testA"
    written = sample.write_vintage_targets(photos, tmp_path)
    assert [p.name for p in written] == [f"{f.stem}_target.png" for f in sorted(photos.glob("*.png"))]
    src = np.asarray(Image.open(sorted(photos.glob("*.png"))[0]).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(written[0])), sample.vintage(src))
