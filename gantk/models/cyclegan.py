"""CycleGAN (Zhu et al. 2017): two generators, two PatchGAN discriminators, cycle + identity L1."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gantk.config import GANOptions, TrainConfig, opt
from gantk.models.base import DISCRIMINATOR, GENERATOR, BaseModel
from gantk.models.networks import define_D, define_G
from gantk.nn import GANLoss, set_requires_grad
from gantk.nn.pool import ImagePool


@dataclass
class CycleGANConfig(GANOptions, TrainConfig):
    MODEL = "cyclegan"
    no_dropout: bool = opt(True, "no dropout in the generator (CycleGAN default)", off="dropout")
    lambda_A: float = opt(10.0, "weight of the cycle loss A -> B -> A", min=0)
    lambda_B: float = opt(10.0, "weight of the cycle loss B -> A -> B", min=0)
    lambda_identity: float = opt(0.5, "identity loss weight, relative to lambda_A/lambda_B (0 disables)", min=0)
    pool_size: int = opt(50, "image buffer size for the discriminators (0: no buffer)", min=0)


class CycleGANModel(BaseModel):
    """G_A: A -> B, G_B: B -> A; D_A judges domain B, D_B judges domain A."""

    Config = CycleGANConfig
    roles = {"G_A": GENERATOR, "G_B": GENERATOR, "D_A": DISCRIMINATOR, "D_B": DISCRIMINATOR}
    d_loss_names = ("D_A", "D_B")
    loss_names = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
    visual_rows = (("real_A", "fake_B", "rec_A", "idt_B"), ("real_B", "fake_A", "rec_B", "idt_A"))

    def __init__(self, cfg: CycleGANConfig, device="cpu", rank=0, world_size=1):
        super().__init__(cfg, device, rank, world_size)
        g = dict(ngf=cfg.ngf, netG=cfg.netG, norm=cfg.norm, use_dropout=cfg.use_dropout,
                 init_type=cfg.init_type, init_gain=cfg.init_gain)
        d = dict(ndf=cfg.ndf, netD=cfg.netD, n_layers_D=cfg.n_layers_D, norm=cfg.norm,
                 init_type=cfg.init_type, init_gain=cfg.init_gain)
        self.nets = {"G_A": define_G(cfg.input_nc, cfg.output_nc, **g),
                     "G_B": define_G(cfg.output_nc, cfg.input_nc, **g),
                     "D_A": define_D(cfg.output_nc, **d),
                     "D_B": define_D(cfg.input_nc, **d)}
        self.optimizers = {"G": self.adam("G_A", "G_B"), "D": self.adam("D_A", "D_B")}
        self.criterionGAN = GANLoss(cfg.gan_mode).to(self.device)
        self.criterionCycle = self.criterionIdt = torch.nn.L1Loss()
        # each rank keeps its own pool history; seeds differ per rank
        self.fake_A_pool = ImagePool(cfg.pool_size, cfg.seed * 7919 + 2 * rank)
        self.fake_B_pool = ImagePool(cfg.pool_size, cfg.seed * 7919 + 2 * rank + 1)

    def forward(self):
        G = self.fwd
        self.fake_B = G["G_A"](self.real_A)
        self.rec_A = G["G_B"](self.fake_B)
        self.fake_A = G["G_B"](self.real_B)
        self.rec_B = G["G_A"](self.fake_A)

    def backward_G(self):
        c, G, D, L = self.cfg, self.fwd, self.frozen, self.losses
        if c.lambda_identity > 0:
            self.idt_A = G["G_A"](self.real_B)
            self.idt_B = G["G_B"](self.real_A)
            L["idt_A"] = self.criterionIdt(self.idt_A.float(), self.real_B) * c.lambda_B * c.lambda_identity
            L["idt_B"] = self.criterionIdt(self.idt_B.float(), self.real_A) * c.lambda_A * c.lambda_identity
        else:
            L["idt_A"] = L["idt_B"] = torch.zeros((), device=self.device)
        L["G_A"] = self.criterionGAN(D["D_A"](self.fake_B), True)
        L["G_B"] = self.criterionGAN(D["D_B"](self.fake_A), True)
        L["cycle_A"] = self.criterionCycle(self.rec_A.float(), self.real_A) * c.lambda_A
        L["cycle_B"] = self.criterionCycle(self.rec_B.float(), self.real_B) * c.lambda_B
        loss = L["G_A"] + L["G_B"] + L["cycle_A"] + L["cycle_B"] + L["idt_A"] + L["idt_B"]
        self.precision.backward(loss)

    def backward_D(self, name: str, real: torch.Tensor, fake: torch.Tensor) -> None:
        """0.5 * (loss on real + loss on a fake from the pool), as the reference halves D's objective."""
        D = self.fwd[name]
        with self.precision.autocast():
            loss = 0.5 * (self.criterionGAN(D(real), True) + self.criterionGAN(D(fake.detach()), False))
        self.losses[name] = loss
        self.precision.backward(loss)

    def optimize_parameters(self):
        opt_G, opt_D = self.optimizers["G"], self.optimizers["D"]
        with self.precision.autocast():
            self.forward()
        set_requires_grad([self.nets["D_A"], self.nets["D_B"]], False)
        opt_G.zero_grad(set_to_none=True)
        with self.precision.autocast():
            self.backward_G()
        self.precision.step(opt_G)
        set_requires_grad([self.nets["D_A"], self.nets["D_B"]], True)
        opt_D.zero_grad(set_to_none=True)
        self.backward_D("D_A", self.real_B, self.fake_B_pool.query(self.fake_B))
        self.backward_D("D_B", self.real_A, self.fake_A_pool.query(self.fake_A))
        self.precision.step(opt_D)
        self.precision.update()

    def extra_state(self):
        return {"fake_A_pool": self.fake_A_pool.state_dict(), "fake_B_pool": self.fake_B_pool.state_dict()}

    def load_extra_state(self, state):
        if state:
            self.fake_A_pool.load_state_dict(state["fake_A_pool"], self.device)
            self.fake_B_pool.load_state_dict(state["fake_B_pool"], self.device)
