"""MNIST's IDX files (optionally gzipped; torchvision's MNIST/raw layout too) as a data set in [-1, 1]."""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from gantk.errors import DataError

SIDE = 28


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally .gz) as an array; a one-line DataError if damaged."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DataError(f"{path}: IDX header says {'x'.join(map(str, dims))} = {math.prod(dims)} bytes of data, "
                        f"the file has {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def find_idx(root: Path, name: str, required: bool = True) -> Path | None:
    """`name` or `name.gz` in `root` (or in torchvision's `root/MNIST/raw`)."""
    for folder in (root, root / "MNIST" / "raw"):
        for p in (folder / name, folder / f"{name}.gz"):
            if p.is_file():
                return p
    if required:
        raise DataError(f"{root / name}[.gz]: MNIST IDX file not found (`gantk data sample` builds a small offline set)")
    return None


def load_mnist(root: str | Path, phase: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """(images N x 28 x 28 uint8, labels N or None) from `<phase>-images-idx3-ubyte[.gz]` and
    `<phase>-labels-idx1-ubyte[.gz]` (phase: train or t10k; labels are optional and only checked)."""
    root = Path(root)
    path = find_idx(root, f"{phase}-images-idx3-ubyte")
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise DataError(f"{path}: expected N x {SIDE} x {SIDE} images, found shape {images.shape}")
    labels = None
    if label_path := find_idx(root, f"{phase}-labels-idx1-ubyte", required=False):
        labels = read_idx(label_path)
        if labels.shape != images.shape[:1]:
            raise DataError(f"{label_path}: {labels.shape} labels for {len(images)} images")
    return images, labels


class MnistDataset(torch.utils.data.Dataset):
    """MNIST images as 1x28x28 tensors in [-1, 1] (the tutorial's Normalize(0.5, 0.5))."""

    def __init__(self, cfg, phase: str = "train"):
        images, labels = load_mnist(cfg.dataroot, phase)
        n = cfg.max_dataset_size or len(images)
        self.images = torch.from_numpy(images[:n].copy())
        self.labels = torch.from_numpy(labels[:n].astype(np.int64)) if labels is not None else None

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        item = {"A": self.images[i][None].float() / 127.5 - 1}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item
