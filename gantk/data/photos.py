"""Photos for style transfer: scaling, the centre square, and a folder of photos as a data set."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from gantk.data.datasets import SingleDataset
from gantk.io import load_image, pil_to_tensor


def fit_size(img: Image.Image, max_side: int) -> Image.Image:
    """Scale down (never up) so the longer side is at most `max_side` px (0: unchanged)."""
    scale = max_side / max(img.size) if max_side else 1.0
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def load_batch(path: str | Path, max_side: int = 0, device="cpu") -> torch.Tensor:
    """An image file as a 1x3xHxW tensor in [-1, 1], longer side at most `max_side` px (0: as is)."""
    return pil_to_tensor(fit_size(load_image(path), max_side)).unsqueeze(0).to(device)


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side scaled to `size`, then the centre size x size square (the example's transform)."""
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class PhotoDataset(SingleDataset):
    """A folder of photos (searched recursively), each scaled and centre-cropped to --image_size."""

    def __init__(self, cfg, phase: str = "train"):
        super().__init__(cfg, phase, train=True)

    def get(self, index):
        path = self.A_paths[index]
        return {"A": pil_to_tensor(centre_square(load_image(path), self.cfg.image_size)), "A_paths": str(path)}
