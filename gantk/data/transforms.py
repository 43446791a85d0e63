"""Load-time scaling, cropping and flipping as the reference does it, driven by a torch.Generator."""
from __future__ import annotations

import torch
from PIL import Image

from gantk.io import pil_to_tensor


PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


def get_params(preprocess: str, load_size: int, crop_size: int, size: tuple[int, int],
               gen: torch.Generator) -> dict:
    """Random crop position and flip for an image of `size` (w, h), shared by the A and B of a pair."""
    w, h = size
    if preprocess == "resize_and_crop":
        w = h = load_size
    elif preprocess == "scale_width_and_crop":
        w, h = load_size, load_size * h // w
    x = int(torch.randint(0, max(0, w - crop_size) + 1, (1,), generator=gen))
    y = int(torch.randint(0, max(0, h - crop_size) + 1, (1,), generator=gen))
    flip = bool(torch.rand((), generator=gen) > 0.5)
    return {"crop_pos": (x, y), "flip": flip}


def _scale_width(img: Image.Image, target: int, crop_size: int) -> Image.Image:
    ow, oh = img.size
    if ow == target and oh >= crop_size:
        return img
    return img.resize((target, int(max(target * oh / ow, crop_size))), Image.BICUBIC)


def _make_multiple(img: Image.Image, base: int) -> Image.Image:
    ow, oh = img.size
    w, h = max(base, round(ow / base) * base), max(base, round(oh / base) * base)
    return img if (w, h) == (ow, oh) else img.resize((w, h), Image.BICUBIC)


def transform(img: Image.Image, preprocess: str, load_size: int, crop_size: int, params: dict | None,
              no_flip: bool = True, grayscale: bool = False, base: int = 4) -> torch.Tensor:
    """PIL image -> CHW tensor in [-1, 1]. Without `params`, crops are centred and nothing flips."""
    if grayscale:
        img = img.convert("L")
    if "resize" in preprocess:
        img = img.resize((load_size, load_size), Image.BICUBIC)
    elif "scale_width" in preprocess:
        img = _scale_width(img, load_size, crop_size)
    if "crop" in preprocess:
        ow, oh = img.size
        x, y = params["crop_pos"] if params else ((ow - crop_size) // 2, (oh - crop_size) // 2)
        x, y = min(max(x, 0), max(ow - crop_size, 0)), min(max(y, 0), max(oh - crop_size, 0))
        img = img.crop((x, y, x + crop_size, y + crop_size))
    if preprocess == "none":
        img = _make_multiple(img, base)
    if not no_flip and params and params["flip"]:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return pil_to_tensor(img)
