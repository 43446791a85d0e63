"""Image files <-> tensors. Tensors are float images in [-1, 1], CHW (or NCHW)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gantk.errors import DataError

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


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Read an image fully (so truncated files fail here), converted to `mode`."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


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
