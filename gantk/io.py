"""Image files <-> tensors. Tensors are float images in [-1, 1], CHW (or NCHW)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gantk.errors import DataError, GantkError

# Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS (a decompression-bomb guard); this lifts the limit.
ALLOW_LARGE_ENV = "GANTK_ALLOW_LARGE_IMAGES"
if os.environ.get(ALLOW_LARGE_ENV, "0") not in ("", "0"):
    Image.MAX_IMAGE_PIXELS = None
UNSIGNED_16 = ("I;16", "I;16L", "I;16B", "I;16N")

IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMG_EXTENSIONS


def list_images(folder: str | Path, max_count: float = float("inf")) -> list[Path]:
    """Sorted image files below `folder` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such image folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    return files[: int(min(max_count, len(files)))]


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grey images as 8-bit "L" (Pillow's convert would clip them at 255):
    unsigned 16-bit modes / 257; modes I and F by their values: in [0, 255] as they are, F in [0, 1] x 255,
    in [0, 65535] / 257, anything else stretched from its minimum to its maximum. Other modes pass through."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.nan_to_num(np.asarray(img, dtype=np.float64))
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if img.mode in UNSIGNED_16 or (lo >= 0 and 255 < hi <= 65535):
        a = a / 257
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255
    elif lo < 0 or hi > 255:
        a = (a - lo) * 255 / max(hi - lo, 1e-12)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Read an image fully (so truncated files fail here), turned upright by its EXIF orientation, deeper
    than 8-bit grey scaled to 8 bits (`to_8bit`), converted to `mode`."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_8bit(ImageOps.exif_transpose(img)).convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e} If you trust the file, set {ALLOW_LARGE_ENV}=1 to lift the limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def check_writable(path: str | Path, option: str, folder: bool = False) -> Path:
    """`path` (a file, or with `folder` a folder) can be created or overwritten, else a GantkError naming
    `option`: commands call this first, so they fail before their work rather than at its last write."""
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise GantkError(f"{option} {path}: exists and is not a {kind}; give a {kind} path")
    base = next(p for p in (path, *path.parents) if p.exists())  # the path itself, or the folder it goes in
    if base != path and not base.is_dir():
        raise GantkError(f"{option} {path}: {base} is a file, not a folder; give a path in a writable folder")
    if not os.access(base, os.W_OK):
        raise GantkError(f"{option} {path}: {base} is not writable; give a path in a writable folder")
    return path


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> CHW float tensor in [-1, 1]."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """CHW (or 1CHW) tensor in [-1, 1] -> 8-bit PIL image."""
    if t.dim() == 4:
        t = t[0]
    arr = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def save_image(t: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_image(t).save(path)
    return path


def image_grid(rows: list[list[torch.Tensor]], pad: int = 2) -> torch.Tensor:
    """Tile CHW images (rows of columns, equal sizes per row) into one CHW image, white gaps."""
    h = max(t.shape[-2] for r in rows for t in r)
    w = max(t.shape[-1] for r in rows for t in r)
    ncol = max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * (h + pad) - pad, ncol * (w + pad) - pad)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            t = t.detach().float().cpu()
            t = t[0] if t.dim() == 4 else t
            t = t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]
            y, x = i * (h + pad), j * (w + pad)
            grid[:, y : y + t.shape[1], x : x + t.shape[2]] = t
    return grid
