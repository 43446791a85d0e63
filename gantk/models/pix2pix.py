"""pix2pix (Isola et al. 2017): a U-Net G and a conditional PatchGAN D on cat(A, B), GAN + L1 x100."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gantk.config import DATASET_MODES, GAN_MODES, NETG_NAMES, NORMS, GANOptions, TrainConfig, opt
from gantk.models.base import DISCRIMINATOR, GENERATOR, BaseModel
from gantk.models.networks import define_D, define_G
from gantk.nn import GANLoss, set_requires_grad
from gantk.nn.pool import ImagePool


@dataclass
class Pix2PixConfig(GANOptions, TrainConfig):
    MODEL = "pix2pix"
    dataset_mode: str = opt("aligned", "how the data set is laid out (pix2pix: A|B pairs)", DATASET_MODES)
    netG: str = opt("unet_256", "generator architecture", NETG_NAMES)
    norm: str = opt("batch", "normalisation layer", NORMS)
    gan_mode: str = opt("vanilla", "GAN objective", GAN_MODES)
    lambda_L1: float = opt(100.0, "weight of the L1 loss |G(A) - B|", min=0)
    pool_size: int = opt(0, "image buffer size for the discriminator (0: no buffer, the pix2pix default)", min=0)


class Pix2PixModel(BaseModel):
    """G: A -> B; D judges (A, B) pairs, so it sees the input alongside the real or generated output."""

    Config = Pix2PixConfig
    roles = {"G": GENERATOR, "D": DISCRIMINATOR}
    d_loss_names = ("D_real", "D_fake")
    loss_names = ("G_GAN", "G_L1", "D_real", "D_fake")
    visual_rows = (("real_A", "fake_B", "real_B"),)

    def __init__(self, cfg: Pix2PixConfig, device="cpu", rank=0, world_size=1):
        super().__init__(cfg, device, rank, world_size)
        init = dict(init_type=cfg.init_type, init_gain=cfg.init_gain)
        self.nets = {"G": define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.norm, cfg.use_dropout, **init),
                     "D": define_D(cfg.input_nc + cfg.output_nc, cfg.ndf, cfg.netD, cfg.n_layers_D, cfg.norm, **init)}
        self.optimizers = {"G": self.adam("G"), "D": self.adam("D")}
        self.criterionGAN = GANLoss(cfg.gan_mode).to(self.device)
        self.criterionL1 = torch.nn.L1Loss()
        self.fake_AB_pool = ImagePool(cfg.pool_size, cfg.seed * 7919 + rank)

    def forward(self):
        self.fake_B = self.fwd["G"](self.real_A)

    def backward_D(self):
        """0.5 * (D(A, B) vs real + D(A, G(A)) vs fake), G(A) detached."""
        D, L = self.fwd["D"], self.losses
        fake_AB = self.fake_AB_pool.query(torch.cat([self.real_A, self.fake_B], 1))
        L["D_fake"] = self.criterionGAN(D(fake_AB.detach()), False)
        L["D_real"] = self.criterionGAN(D(torch.cat([self.real_A, self.real_B], 1)), True)
        self.precision.backward(0.5 * (L["D_fake"] + L["D_real"]))

    def backward_G(self):
        """D(A, G(A)) should look real, and G(A) should be close to B in L1."""
        L = self.losses
        L["G_GAN"] = self.criterionGAN(self.frozen["D"](torch.cat([self.real_A, self.fake_B], 1)), True)
        L["G_L1"] = self.criterionL1(self.fake_B.float(), self.real_B) * self.cfg.lambda_L1
        self.precision.backward(L["G_GAN"] + L["G_L1"])

    def optimize_parameters(self):
        opt_G, opt_D = self.optimizers["G"], self.optimizers["D"]
        with self.precision.autocast():
            self.forward()
        set_requires_grad(self.nets["D"], True)
        opt_D.zero_grad(set_to_none=True)
        with self.precision.autocast():
            self.backward_D()
        self.precision.step(opt_D)
        set_requires_grad(self.nets["D"], False)
        opt_G.zero_grad(set_to_none=True)
        with self.precision.autocast():
            self.backward_G()
        self.precision.step(opt_G)
        self.precision.update()

    def extra_state(self):
        return {"fake_AB_pool": self.fake_AB_pool.state_dict()}

    def load_extra_state(self, state):
        if state:
            self.fake_AB_pool.load_state_dict(state["fake_AB_pool"], self.device)
