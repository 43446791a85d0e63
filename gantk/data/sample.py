"""Small offline sample data sets for the demo and the tests.

Both sets are cut from the colour photographs that ship inside the
scikit-image wheel, so building them never touches the network:

* ``photo2vintage/`` -- unaligned (CycleGAN layout ``trainA/ trainB/ testA/
  testB/``): A are plain photo crops, B are other crops given a "vintage"
  look (sepia, soft contrast, warm cast, vignette).
* ``edges2photos/`` -- aligned (pix2pix layout ``train/ val/ test/``): each
  file is ``A|B`` side by side, A an edge sketch of the crop, B the crop.

Train images come from :data:`TRAIN_SOURCES` only; val and test images come
from the held-out :data:`TEST_SOURCES`.

:func:`build_digits` adds ``digits/``: scikit-learn's 1797 real 8x8 handwritten
digits scaled to 28x28 and written as MNIST IDX files, for the MNIST GAN.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "TRAIN_SOURCES",
    "TEST_SOURCES",
    "UNALIGNED_COUNTS",
    "ALIGNED_COUNTS",
    "build_sample_data",
    "build_digits",
    "DIGITS_TRAIN",
    "vintage",
]

#: scikit-image sample photos (files in ``skimage/data``) used for training.
TRAIN_SOURCES = ("astronaut.png", "coffee.png", "motorcycle_left.png", "hubble_deep_field.jpg")
#: Held-out photos used only for the val/test splits.
TEST_SOURCES = ("chelsea.png", "rocket.jpg")

#: Images per split.
UNALIGNED_COUNTS = {"trainA": 40, "trainB": 40, "testA": 8, "testB": 8}
ALIGNED_COUNTS = {"train": 40, "val": 4, "test": 8}

#: Digits in the ``train`` IDX files; the rest of the 1797 go to ``t10k``.
DIGITS_TRAIN = 1500

_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def build_sample_data(out_dir, seed: int = 0, size: int = 128, overwrite: bool = False) -> dict[str, Path]:
    """Build both sample sets under ``out_dir``; return ``{"unaligned": path, "aligned": path}``.

    Deterministic for a given ``seed``. A set that is already complete (same
    seed and size) is left untouched unless ``overwrite`` is true.
    """
    try:
        import skimage.data
        import skimage.feature
    except ImportError as e:
        raise RuntimeError("building the sample data needs scikit-image: pip install scikit-image") from e

    data_dir = Path(skimage.data.__file__).parent
    photos: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in photos:
            path = data_dir / name
            if not path.is_file():
                raise RuntimeError(f"scikit-image sample photo not found: {path}")
            photos[name] = np.asarray(Image.open(path).convert("RGB"))
        return photos[name]

    def photo_crop(split: str, i: int, rng: np.random.Generator) -> np.ndarray:
        sources = TRAIN_SOURCES if split.startswith("train") else TEST_SOURCES
        return _random_crop(load(sources[i % len(sources)]), rng, size)

    def unaligned(split: str, i: int, rng: np.random.Generator) -> np.ndarray:
        crop = photo_crop(split, i, rng)
        return vintage(crop) if split.endswith("B") else crop

    def aligned(split: str, i: int, rng: np.random.Generator) -> np.ndarray:
        crop = photo_crop(split, i, rng)
        gray = crop.astype(np.float64) @ [0.299, 0.587, 0.114] / 255.0
        edges = skimage.feature.canny(gray, sigma=max(1.0, size / 64), low_threshold=0.05, high_threshold=0.1)
        sketch = np.where(edges, 0, 255).astype(np.uint8)
        return np.concatenate([np.repeat(sketch[..., None], 3, axis=2), crop], axis=1)

    out_dir = Path(out_dir)
    sets = {
        "unaligned": ("photo2vintage", UNALIGNED_COUNTS, unaligned, _UNALIGNED_README),
        "aligned": ("edges2photos", ALIGNED_COUNTS, aligned, _ALIGNED_README),
    }
    paths = {}
    for k, (key, (name, counts, make, readme)) in enumerate(sets.items()):
        readme = readme.format(seed=seed, size=size, train=", ".join(TRAIN_SOURCES), test=", ".join(TEST_SOURCES))
        # Each set has its own random stream, so rebuilding one never changes the other.
        paths[key] = _write_set(out_dir / name, counts, make, readme, np.random.default_rng([seed, k]), overwrite)
    return paths


def build_digits(out_dir, overwrite: bool = False) -> Path:
    """Write scikit-learn's digits as MNIST IDX files under ``out_dir/digits``; return that folder.

    Each 8x8 digit (0..16) is scaled to 20x20 (bicubic) and centred in 28x28 on black, as MNIST
    boxes its digits; the first :data:`DIGITS_TRAIN` go to ``train-*``, the rest to ``t10k-*``
    (``*-images-idx3-ubyte.gz`` and ``*-labels-idx1-ubyte.gz``). Deterministic.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise RuntimeError("building the digits set needs scikit-learn: pip install scikit-learn") from e
    root = Path(out_dir) / "digits"
    files = [f"{p}-{k}.gz" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    readme = root / "README.txt"
    if not overwrite and readme.is_file() and readme.read_text() == _DIGITS_README and all((root / f).is_file() for f in files):
        return root
    digits = load_digits()
    images = np.stack([_mnist_box(d) for d in digits.images])
    labels = digits.target.astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    readme.unlink(missing_ok=True)
    for prefix, part in (("train", slice(0, DIGITS_TRAIN)), ("t10k", slice(DIGITS_TRAIN, None))):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images[part])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    readme.write_text(_DIGITS_README)
    return root


def _mnist_box(digit: np.ndarray) -> np.ndarray:
    """An 8x8 digit with values 0..16 -> 28x28 uint8: scaled to 20x20 and centred, white on black."""
    small = Image.fromarray(np.round(digit * (255 / 16)).astype(np.uint8))
    box = np.asarray(small.resize((20, 20), Image.Resampling.BICUBIC))
    return np.pad(box, 4)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (magic 0x08, ndim, big-endian dims, data), gzipped without a timestamp."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), mtime=0))


def vintage(img: np.ndarray) -> np.ndarray:
    """Return a "vintage" version of an RGB uint8 image: sepia, soft contrast, warm cast, vignette."""
    x = img.astype(np.float64) / 255.0
    x = 0.85 * np.clip(x @ _SEPIA.T, 0, 1) + 0.15 * x  # sepia toning, a hint of the original colour
    x = 0.55 + 0.7 * (x - 0.5)  # softer contrast, lifted blacks
    x = x * [1.04, 0.98, 0.85]  # warm cast
    h, w = x.shape[:2]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    x = x * (1.0 - 0.3 * (xx**2 + yy**2) / 2)[..., None]  # vignette
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def write_vintage_targets(photos: str | Path, out: str | Path) -> list[Path]:
    """`<stem>_target.png` = vintage(photo) in `out` for each photo in `photos`: the ground truth of the
    photo2vintage domain, beside translate's `<stem>_fake.png`, for `gantk eval --paired`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(Path(photos).glob("*.png")):
        written.append(out / f"{f.stem}_target.png")
        Image.fromarray(vintage(np.asarray(Image.open(f).convert("RGB")))).save(written[-1])
    return written


def _random_crop(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random square crop (40-100% of the short side, random position, maybe mirrored) resized to ``size``."""
    h, w = img.shape[:2]
    side = int(round(rng.uniform(0.4, 1.0) * min(h, w)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def _write_set(root: Path, counts: dict[str, int], make, readme: str, rng: np.random.Generator, overwrite: bool) -> Path:
    """Write ``counts[split]`` images ``make(split, i, rng)`` per split, then README.txt (marks completion)."""
    if not overwrite and _is_complete(root, counts, readme):
        return root
    (root / "README.txt").unlink(missing_ok=True)
    for split, n in counts.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
        for i in range(n):
            Image.fromarray(make(split, i, rng)).save(folder / f"{i:03d}.png")
    (root / "README.txt").write_text(readme)
    return root


def _is_complete(root: Path, counts: dict[str, int], readme: str) -> bool:
    readme_path = root / "README.txt"
    if not readme_path.is_file() or readme_path.read_text() != readme:
        return False
    return all(
        sorted(p.name for p in (root / split).glob("*.png")) == [f"{i:03d}.png" for i in range(n)]
        for split, n in counts.items()
    )


_COMMON_README = """\
Sources: colour photographs shipped with scikit-image (the files in skimage/data).
Licences and credits: see the docstrings of the matching skimage.data
functions (e.g. help(skimage.data.astronaut)); all are public domain or CC0
except motorcycle_left (Middlebury 2014 stereo data set, Scharstein et al.).
Train images are cut from: {train}
Val/test images are cut from the held-out photos: {test}
Each image is a random square crop (40-100% of the short side, random position,
random horizontal flip) resized to {size}x{size}.
Built by gantk.data.sample.build_sample_data(seed={seed}, size={size}).
"""

_UNALIGNED_README = """\
photo2vintage: unaligned sample set for CycleGAN (trainA/ trainB/ testA/ testB/).
Domain A: plain photo crops. Domain B: other crops given a "vintage" look
(sepia toning, softer contrast, warm cast, vignette; see gantk.data.sample.vintage).
""" + _COMMON_README

_ALIGNED_README = """\
edges2photos: aligned sample set for pix2pix (train/ val/ test/).
Each PNG is A|B side by side ({size} high, 2x{size} wide): A is a Canny edge map
of the crop (dark lines on white), B is the colour crop itself.
""" + _COMMON_README

_DIGITS_README = f"""\
digits: a small MNIST-style set for the MNIST GAN (train-* and t10k-* IDX files, gzipped).
Source: scikit-learn's load_digits(), 1797 real 8x8 handwritten digits (a copy of the test
set of the UCI ML "Optical Recognition of Handwritten Digits" data set, Alpaydin & Kaynak
1998, CC BY 4.0). Each digit (0..16) is scaled to 20x20 (bicubic) and centred in a 28x28
black image, as MNIST does. train: the first {DIGITS_TRAIN} digits; t10k: the other {1797 - DIGITS_TRAIN}.
Built by gantk.data.sample.build_digits.
"""
