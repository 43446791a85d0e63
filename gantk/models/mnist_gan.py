"""The classic MNIST GAN (yunjey/pytorch-tutorial): MLP generator and discriminator, BCE, Adam 2e-4.

G: z (64) -> 256 -> ReLU -> 256 -> ReLU -> 784 -> tanh; D: 784 -> 256 -> LeakyReLU(0.2) -> 256 ->
LeakyReLU(0.2) -> 1 logit (BCE with logits = the tutorial's sigmoid + BCELoss). PyTorch's default
init, Adam's default betas, batch 100, 200 epochs, as the tutorial. Both are plain Sequentials with
the tutorial's keys (0, 2, 4), so its G.ckpt/D.ckpt load. Data: MNIST IDX files, pixels to [-1, 1].
"""
from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gantk.config import TrainConfig, opt, require_positive
from gantk.errors import DataError
from gantk.io import image_grid
from gantk.models.base import BaseModel
from gantk.nn import GANLoss, set_requires_grad

SIDE = 28


def mlp_generator(latent_dim: int = 64, hidden: int = 256) -> nn.Sequential:
    """z (N, latent_dim) -> images (N, 1, 28, 28) in [-1, 1]."""
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, SIDE * SIDE), nn.Tanh(), nn.Unflatten(1, (1, SIDE, SIDE)))


def mlp_discriminator(hidden: int = 256) -> nn.Sequential:
    """Flattened images (N, 784) -> real/fake logits (N, 1)."""
    return nn.Sequential(nn.Linear(SIDE * SIDE, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


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


@dataclass
class MnistGANConfig(TrainConfig):
    MODEL = "mnist_gan"
    dataroot: str = opt("", "folder with train-images-idx3-ubyte[.gz] (+ train-labels-idx1-ubyte[.gz])")
    latent_dim: int = opt(64, "length of the noise vector z")
    hidden_dim: int = opt(256, "width of the hidden layers of G and D")
    n_samples: int = opt(64, "fixed-noise samples in each sample grid")
    gan_mode: str = opt("vanilla", "GAN objective (vanilla: BCE, as the tutorial)", ("lsgan", "vanilla", "wgangp"))
    batch_size: int = opt(100, "input batch size (per process under torchrun)")
    beta1: float = opt(0.9, "Adam beta1 (the tutorial uses Adam's defaults)")
    n_epochs: int = opt(200, "epochs at the initial learning rate")
    n_epochs_decay: int = opt(0, "epochs of linear decay to zero")
    print_freq: int = opt(20000, "log losses every this many images")
    display_freq: int = opt(60000, "save a sample grid every this many images (and at every epoch end)")
    save_latest_freq: int = opt(60000, "save the resumable latest state every this many images")


class MnistGANModel(BaseModel):
    """D step on real and fake digits, then a G step (D frozen) on fresh noise, as the tutorial."""

    Config = MnistGANConfig
    net_names = ("G", "D")
    loss_names = ("D_real", "D_fake", "G")
    visual_rows = (("samples",),)

    @classmethod
    def check_config(cls, cfg: MnistGANConfig) -> None:
        require_positive(cfg, "latent_dim", "hidden_dim", "n_samples")

    @classmethod
    def make_dataset(cls, cfg: MnistGANConfig, phase: str):
        return MnistDataset(cfg, phase)

    def __init__(self, cfg: MnistGANConfig, device="cpu", rank=0, world_size=1):
        super().__init__(cfg, device, rank, world_size)
        self.nets = {"G": mlp_generator(cfg.latent_dim, cfg.hidden_dim), "D": mlp_discriminator(cfg.hidden_dim)}
        self.optimizers = {"G": self.adam("G"), "D": self.adam("D")}
        self.criterion = GANLoss(cfg.gan_mode).to(self.device)
        self.fixed_z = torch.randn(cfg.n_samples, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))

    def z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, device=self.device)

    def set_input(self, batch):
        self.real = batch["A"].to(self.device, non_blocking=True)

    def optimize_parameters(self):
        G, L, crit, P = self.fwd["G"], self.losses, self.criterion, self.precision
        opt_G, opt_D = self.optimizers["G"], self.optimizers["D"]
        n = self.real.shape[0]
        opt_D.zero_grad(set_to_none=True)
        with P.autocast():
            with torch.no_grad():
                fake = G(self.z(n))
            L["D_real"] = crit(self.fwd["D"](self.real.flatten(1)), True)
            L["D_fake"] = crit(self.fwd["D"](fake.flatten(1)), False)
        P.backward(L["D_real"] + L["D_fake"])
        P.step(opt_D)
        set_requires_grad(self.nets["D"], False)
        opt_G.zero_grad(set_to_none=True)
        with P.autocast():
            self.fake = G(self.z(n))
            L["G"] = crit(self.frozen["D"](self.fake.flatten(1)), True)
        P.backward(L["G"])
        P.step(opt_G)
        set_requires_grad(self.nets["D"], True)
        P.update()

    def current_visuals(self):
        """One square grid of G's digits for the fixed noise."""
        with torch.no_grad():
            digits = self.nets["G"](self.fixed_z.to(self.device)).float().cpu()
        k = math.ceil(math.sqrt(len(digits)))
        return {"samples": image_grid([list(digits[i : i + k]) for i in range(0, len(digits), k)])[None]}
