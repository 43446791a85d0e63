"""Data sets in the reference folder layouts: unaligned (trainA/trainB), aligned (A|B), single folder."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from PIL import Image

from gantk.errors import DataError
from gantk.io import list_images, load_image
from gantk.data.transforms import get_params, transform

log = logging.getLogger("gantk.data")


def check_images(paths: list[Path], bad_images: str) -> list[Path]:
    """Read each file's header: 'fail' raises on the first bad one, 'skip' drops bad ones with a warning."""
    good = []
    for p in paths:
        try:
            with Image.open(p) as img:
                img.size  # header parsed
            good.append(p)
        except Exception as e:
            if bad_images == "fail":
                raise DataError(f"{p}: cannot read image ({e}); use --bad_images skip to skip such files") from None
            log.warning("skipping unreadable image %s (%s)", p, e)
    return good


class ImageFolderDataset(torch.utils.data.Dataset):
    """Base: per-sample randomness comes from (seed, epoch, index), so order and augmentation are
    reproducible across resumes, worker counts and processes."""

    def __init__(self, cfg, phase: str = "train", train: bool = True):
        self.cfg, self.phase, self.train = cfg, phase, train
        self.epoch = 0

    @property
    def btoa(self) -> bool:
        return self.cfg.direction == "BtoA"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + self.epoch) * 1_000_003 + index)

    def folder_images(self, folder: Path) -> list[Path]:
        paths = list_images(folder, self.cfg.max_dataset_size or math.inf)
        paths = check_images(paths, self.cfg.bad_images)
        if not paths:
            raise DataError(f"{folder}: no readable images found")
        return paths

    def to_tensor(self, img: Image.Image, params: dict | None, channels: int) -> torch.Tensor:
        c = self.cfg
        return transform(img, c.preprocess, c.load_size, c.crop_size, params,
                         no_flip=c.no_flip or not self.train, grayscale=channels == 1)

    def params(self, size, gen) -> dict | None:
        c = self.cfg
        return get_params(c.preprocess, c.load_size, c.crop_size, size, gen) if self.train else None

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self.get(i)
            except DataError as e:
                if self.cfg.bad_images == "fail":
                    raise DataError(f"{e}; use --bad_images skip to skip such files") from None
                log.warning("skipping: %s", e)
        raise DataError(f"{self.cfg.dataroot}: no readable images left")

    def get(self, index: int) -> dict:
        raise NotImplementedError


class UnalignedDataset(ImageFolderDataset):
    """Unpaired domains `<phase>A/` and `<phase>B/`; B is drawn at random unless --serial_batches."""

    def __init__(self, cfg, phase="train", train=True):
        super().__init__(cfg, phase, train)
        root = Path(cfg.dataroot)
        self.A_paths = self.folder_images(root / f"{phase}A")
        self.B_paths = self.folder_images(root / f"{phase}B")

    def __len__(self):
        return max(len(self.A_paths), len(self.B_paths))

    def get(self, index):
        gen = self.generator(index)
        a_path = self.A_paths[index % len(self.A_paths)]
        if self.cfg.serial_batches or not self.train:
            b_index = index % len(self.B_paths)
        else:
            b_index = int(torch.randint(0, len(self.B_paths), (1,), generator=gen))
        b_path = self.B_paths[b_index]
        nc_a, nc_b = (self.cfg.output_nc, self.cfg.input_nc) if self.btoa else (self.cfg.input_nc, self.cfg.output_nc)
        A_img, B_img = load_image(a_path), load_image(b_path)
        A = self.to_tensor(A_img, self.params(A_img.size, gen), nc_a)
        B = self.to_tensor(B_img, self.params(B_img.size, gen), nc_b)
        return {"A": A, "B": B, "A_paths": str(a_path), "B_paths": str(b_path)}


class AlignedDataset(ImageFolderDataset):
    """Pairs stored side by side, A|B, in `<dataroot>/<phase>/`; one crop and flip for both halves."""

    def __init__(self, cfg, phase="train", train=True):
        super().__init__(cfg, phase, train)
        self.AB_paths = self.folder_images(Path(cfg.dataroot) / phase)

    def __len__(self):
        return len(self.AB_paths)

    def get(self, index):
        path = self.AB_paths[index]
        AB = load_image(path)
        w, h = AB.size
        if w < 2:
            raise DataError(f"{path}: too narrow to hold an A|B pair")
        A_img, B_img = AB.crop((0, 0, w // 2, h)), AB.crop((w // 2, 0, w, h))
        params = self.params(A_img.size, self.generator(index))
        c = self.cfg
        nc_a, nc_b = (c.output_nc, c.input_nc) if self.btoa else (c.input_nc, c.output_nc)
        A, B = self.to_tensor(A_img, params, nc_a), self.to_tensor(B_img, params, nc_b)
        return {"A": A, "B": B, "A_paths": str(path), "B_paths": str(path)}


class SingleDataset(ImageFolderDataset):
    """One folder of images (test time, or one domain)."""

    def __init__(self, cfg, phase="test", train=False, folder: str | Path | None = None):
        super().__init__(cfg, phase, train)
        self.A_paths = self.folder_images(Path(folder or cfg.dataroot))

    def __len__(self):
        return len(self.A_paths)

    def get(self, index):
        path = self.A_paths[index]
        nc = self.cfg.output_nc if self.btoa else self.cfg.input_nc
        img = load_image(path)
        return {"A": self.to_tensor(img, self.params(img.size, self.generator(index)), nc), "A_paths": str(path)}


DATASETS = {"unaligned": UnalignedDataset, "aligned": AlignedDataset, "single": SingleDataset}
DATASET_MODES = tuple(DATASETS)
DIRECTIONS = ("AtoB", "BtoA")
BAD_IMAGES = ("fail", "skip")


def make_dataset(cfg, phase: str = "train", train: bool = True) -> ImageFolderDataset:
    if cfg.preprocess != "none" and "crop" in cfg.preprocess and "resize" in cfg.preprocess \
            and cfg.load_size < cfg.crop_size:
        raise DataError(f"--load_size {cfg.load_size} is smaller than --crop_size {cfg.crop_size}")
    return DATASETS[cfg.dataset_mode](cfg, phase, train)


class EpochSampler(torch.utils.data.Sampler):
    """This process's share of a seeded per-epoch permutation (like DistributedSampler), from `start` on."""

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank gets as many
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self):
        return max(0, math.ceil(self.n / self.world) - self.start)
