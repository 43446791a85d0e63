"""The classic MNIST GAN (yunjey/pytorch-tutorial): MLP generator and discriminator, BCE, Adam 2e-4.

G: z (64) -> 256 -> ReLU -> 256 -> ReLU -> 784 -> tanh; D: 784 -> 256 -> LeakyReLU(0.2) -> 256 ->
LeakyReLU(0.2) -> 1 logit (BCE with logits = the tutorial's sigmoid + BCELoss). PyTorch's default
init, Adam's default betas, batch 100, 200 epochs, as the tutorial. Both are plain Sequentials with
the tutorial's keys (0, 2, 4), so its G.ckpt/D.ckpt load. Data: MNIST IDX files, pixels to [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gantk.config import GAN_MODES, TrainConfig, opt
from gantk.data.mnist import MnistDataset
from gantk.io import image_grid
from gantk.models.base import DISCRIMINATOR, GENERATOR, BaseModel
from gantk.nn import GANLoss, set_requires_grad
from gantk.nn.mlp import mlp_discriminator, mlp_generator

@dataclass
class MnistGANConfig(TrainConfig):
    MODEL = "mnist_gan"
    dataroot: str = opt("", "folder with train-images-idx3-ubyte[.gz] (+ train-labels-idx1-ubyte[.gz])")
    latent_dim: int = opt(64, "length of the noise vector z", min=1)
    hidden_dim: int = opt(256, "width of the hidden layers of G and D", min=1)
    n_samples: int = opt(64, "fixed-noise samples in each sample grid", min=1)
    gan_mode: str = opt("vanilla", "GAN objective (vanilla: BCE, as the tutorial)", GAN_MODES)
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
    roles = {"G": GENERATOR, "D": DISCRIMINATOR}
    d_loss_names = ("D_real", "D_fake")
    loss_names = ("D_real", "D_fake", "G")
    visual_rows = (("samples",),)

    @classmethod
    def check_config(cls, cfg: MnistGANConfig) -> None:
        pass  # bounds: TrainConfig.validate

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
