"""BicycleGAN (Zhu et al. 2017): multimodal A -> B. cVAE-GAN (B -> E -> z -> G(A, z) ~ B) plus
cLR-GAN (random z -> G(A, z) -> E ~ z), with reference-compatible G, E and D factories and loaders."""
from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.config import DATASET_MODES, INIT_TYPES, NORMS, GANOptions, TrainConfig, opt
from gantk.errors import GantkError
from gantk.models.base import DISCRIMINATOR, ENCODER, GENERATOR, BaseModel
from gantk.models.networks import arch_options
from gantk.nn.generators import UNET_DOWNS
from gantk.nn import GANLoss, NLayerDiscriminator, get_norm_layer, init_weights, set_requires_grad
from gantk.nn.bicycle import (NONLINEARITIES, UPSAMPLES, DNLayersMulti, EResNet, ENLayers, GUnetAddAll, GUnetAddInput,
                              get_nl_layer)

log = logging.getLogger("gantk.bicyclegan")

NETE = {"resnet_128": (EResNet, 4), "resnet_256": (EResNet, 5), "conv_128": (ENLayers, 4), "conv_256": (ENLayers, 5)}
NETD = {"basic_128": (2, False), "basic_256": (3, False), "basic_128_multi": (2, True), "basic_256_multi": (3, True)}
WHERE_ADD = ("input", "all")


def _norm(norm: str):
    """BicycleGAN leaves norm layers out for 'none' (None), where pix2pix/CycleGAN put Identity."""
    return None if norm == "none" else get_norm_layer(norm)


def encoder_size(netE: str) -> int:
    """The one input size (px) an encoder accepts: its trunk ends in an 8x8 average pool."""
    return int(netE.split("_")[1])


def define_bicycle_G(input_nc: int, output_nc: int, nz: int, ngf: int, netG: str = "unet_256",
                     norm: str = "instance", nl: str = "relu", use_dropout: bool = False, where_add: str = "all",
                     upsample: str = "basic", init_type: str = "xavier", init_gain: float = 0.02) -> nn.Module:
    """G(x, z): a U-Net that takes z (N, nz) at the input ('input') or at every down block ('all')."""
    if netG not in UNET_DOWNS:
        raise GantkError(f"--netG {netG!r}: expected one of {', '.join(UNET_DOWNS)}")
    if where_add not in WHERE_ADD:
        raise GantkError(f"--where_add {where_add!r}: expected one of {', '.join(WHERE_ADD)}")
    cls = GUnetAddAll if where_add == "all" and nz > 0 else GUnetAddInput
    net = cls(input_nc, output_nc, nz, UNET_DOWNS[netG], ngf, _norm(norm), get_nl_layer(nl), use_dropout, upsample)
    net.arch = dict(input_nc=input_nc, output_nc=output_nc, nz=nz, ngf=ngf, netG=netG,
                    norm=norm, nl=nl, use_dropout=use_dropout, where_add=where_add, upsample=upsample)
    net.family = "bicyclegan"
    return init_weights(net, init_type, init_gain)


def define_bicycle_E(input_nc: int, output_nc: int, nef: int, netE: str = "resnet_256",
                     norm: str = "instance", nl: str = "lrelu", vaeLike: bool = True, init_type: str = "xavier",
                     init_gain: float = 0.02) -> nn.Module:
    """E(B) -> (mu, logvar) of output_nc (= nz) values each when vaeLike, else mu; B is netE's size.
    (The reference builds E with 'lrelu' whatever its `nl` option says; so does training here.)"""
    if netE not in NETE:
        raise GantkError(f"--netE {netE!r}: expected one of {', '.join(NETE)}")
    cls, depth = NETE[netE]
    net = cls(input_nc, output_nc, nef, depth, _norm(norm), get_nl_layer(nl), vaeLike)
    net.arch = dict(input_nc=input_nc, nz=output_nc, nef=nef, netE=netE, norm=norm, nl=nl, vaeLike=vaeLike)
    return init_weights(net, init_type, init_gain)


def define_bicycle_D(input_nc: int, ndf: int, netD: str = "basic_256_multi", norm: str = "instance",
                     nl: str = "lrelu", num_Ds: int = 2, init_type: str = "xavier", init_gain: float = 0.02) -> nn.Module:
    """PatchGAN(s): 'basic_128/256' (2/3 layers), or '*_multi' with num_Ds scales (a list of maps).
    Discriminators always use LeakyReLU(0.2), whatever `nl` says, as in the reference."""
    if netD not in NETD:
        raise GantkError(f"--netD {netD!r}: expected one of {', '.join(NETD)}")
    n_layers, multi = NETD[netD]
    norm_layer = get_norm_layer(norm)
    net = DNLayersMulti(input_nc, ndf, n_layers, norm_layer, num_Ds) if multi else \
        NLayerDiscriminator(input_nc, ndf, n_layers, norm_layer)
    return init_weights(net, init_type, init_gain)


# --- official and gantk checkpoints ---
OUTER_UPCONV = {"model.up.1.weight": ("basic", 1), "model.up.3.weight": ("bilinear", 0),  # add_all
                "model.model.3.weight": ("basic", 1), "model.model.5.weight": ("bilinear", 0)}  # add_input


def describe_G(sd: dict) -> dict:
    """Best guess of the G options from a state dict's keys and shapes (nz and input_nc need where_add 'all')."""
    sd = {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items()}
    if "model.down.0.weight" in sd:  # G_Unet_add_all
        ngf, in_nc = sd["model.down.0.weight"].shape[:2]
        nz = sd["model.submodule.down.1.weight"].shape[1] - ngf
        guess = dict(where_add="all", nz=nz, input_nc=in_nc - nz, ngf=ngf,
                     netG=f"unet_{2 ** (max(k.count('submodule.') for k in sd) + 1)}")
    elif "model.model.0.weight" in sd:  # G_Unet_add_input
        guess = dict(where_add="input", ngf=sd["model.model.0.weight"].shape[0],
                     netG=f"unet_{2 ** (max(k.count('model.') for k in sd) - 1)}")
    else:
        return {}
    for key, (upsample, dim) in OUTER_UPCONV.items():  # the outermost up conv tells upsample and output_nc
        if key in sd:
            guess.update(upsample=upsample, output_nc=sd[key].shape[dim])
    if any(k.endswith("running_mean") for k in sd):
        guess["norm"] = "batch"
    return {k: v if isinstance(v, str) else int(v) for k, v in guess.items()}


def describe_E(sd: dict) -> dict:
    """Best guess of the E options (netE, nef, nz, input_nc, norm) from a state dict."""
    sd = {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items()}
    if "conv.0.weight" not in sd or "fc.0.weight" not in sd:
        return {}
    blocks = {m.group(1) for k in sd if (m := re.match(r"conv\.(\d+)\.shortcut", k))}
    convs = [k for k, v in sd.items() if k.startswith("conv.") and k.endswith("weight") and v.dim() == 4]
    netE = f"resnet_{2 ** (len(blocks) + 4)}" if blocks else f"conv_{2 ** (len(convs) + 3)}"
    nef, input_nc = sd["conv.0.weight"].shape[:2]
    guess = dict(netE=netE, nef=int(nef), nz=int(sd["fc.0.weight"].shape[0]), input_nc=int(input_nc))
    if any(k.endswith("running_mean") for k in sd):
        guess["norm"] = "batch"
    return guess


G_ARCH = ("input_nc", "output_nc", "nz", "ngf", "netG", "norm", "nl", "use_dropout", "where_add", "upsample")


def g_options(options: dict, which: str = "G") -> dict:
    """define_bicycle_G arguments (G) or build_E ones (E, which encodes B images: output_nc channels) among
    training options (CLI names; only those present)."""
    if which == "E":
        out = arch_options(options, ("nz", "nef", "netE", "norm"))
        return {**out, "input_nc": options["output_nc"]} if "output_nc" in options else out
    return arch_options(options, G_ARCH)


def load_G(path: str | Path, **arch) -> nn.Module:
    """G(x, z) in eval mode from an official `*_net_G.pth` or a gantk checkpoint (`load_generator`, model
    bicyclegan: options from the file's shapes or its saved ones; `arch` overrides)."""
    from gantk.models.loading import load_generator
    return load_generator(path, model="bicyclegan", **arch)


def load_E(path: str | Path, **arch) -> nn.Module:
    """E(B) -> (mu, logvar) in eval mode from an official `*_net_E.pth` or a gantk checkpoint (as load_G)."""
    from gantk.models.loading import load_generator
    return load_generator(path, model="bicyclegan", which="E", **arch)


def build_E(nz: int = 8, **arch) -> nn.Module:
    """define_bicycle_E from an encoder's `arch` (nz: the length of the code it returns)."""
    return define_bicycle_E(output_nc=nz, **arch)


# --- sampling ---
def encode(E: nn.Module, B: torch.Tensor) -> torch.Tensor:
    """mu = E(B): the style code of B (NCHW in [-1, 1]), resized to the encoder's input size if needed."""
    size = encoder_size(E.arch["netE"])
    if B.shape[-2:] != (size, size):
        B = F.interpolate(B, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = E(B)
    return out[0] if isinstance(out, tuple) else out


def diversity(samples: list[torch.Tensor]) -> float:
    """Mean L1 distance over all pairs of samples of one input (images in [-1, 1]); 0 = mode collapse."""
    pairs = list(itertools.combinations(samples, 2))
    if not pairs:
        return 0.0
    return float(sum((a.float() - b.float()).abs().mean() for a, b in pairs) / len(pairs))


# --- training ---
@dataclass
class BicycleGANConfig(GANOptions, TrainConfig):
    MODEL = "bicyclegan"
    dataset_mode: str = opt("aligned", "how the data set is laid out (BicycleGAN: A|B pairs)", DATASET_MODES)
    batch_size: int = opt(2, "input batch size, even: half for the encoded branch, half for random z")
    netG: str = opt("unet_256", "generator architecture", tuple(UNET_DOWNS))
    netD: str = opt("basic_256_multi", "discriminator of the encoded branch", tuple(NETD))
    netD2: str = opt("basic_256_multi", "discriminator of the random-z branch", tuple(NETD))
    netE: str = opt("resnet_256", "encoder; its size must equal --crop_size", tuple(NETE))
    nef: int = opt(64, "encoder filters in the first conv layer", min=1)
    nz: int = opt(8, "length of the latent code z", min=1)
    num_Ds: int = opt(2, "scales of the multi-scale discriminators", min=1)
    norm: str = opt("instance", "normalisation layer", NORMS)
    nl: str = opt("relu", "non-linearity of the generator's up path", tuple(NONLINEARITIES))
    upsample: str = opt("basic", "generator upsampling: transposed conv or bilinear + conv", UPSAMPLES)
    where_add: str = opt("all", "where z enters G: the input only, or every down block", WHERE_ADD)
    no_dropout: bool = opt(True, "no dropout in the generator (BicycleGAN default)", off="use_dropout")
    conditional_D: bool = opt(False, "discriminators see cat(A, B) instead of B")
    use_same_D: bool = opt(False, "one discriminator for both branches")
    init_type: str = opt("xavier", "weight initialisation", INIT_TYPES)
    lambda_L1: float = opt(10.0, "weight of |B - G(A, E(B))|", min=0)
    lambda_GAN: float = opt(1.0, "weight of the GAN loss of the encoded branch D(G(A, E(B)))", min=0)
    lambda_GAN2: float = opt(1.0, "weight of the GAN loss of the random branch D2(G(A, z))", min=0)
    lambda_z: float = opt(0.5, "weight of the latent regression |E(G(A, z)) - z|", min=0)
    lambda_kl: float = opt(0.01, "weight of the KL divergence of E(B) from N(0, I)", min=0)
    lr_decay_iters: int = opt(100, "multiply by 0.1 every this many epochs (step policy)")
    save_latest_freq: int = opt(10000, "save the resumable latest state every this many iterations")


class BicycleGANModel(BaseModel):
    """Each batch splits in halves: (A1, B1) train the encoded branch, B2 serves as real images for D2."""

    Config = BicycleGANConfig
    roles = {"G": GENERATOR, "E": ENCODER, "D": DISCRIMINATOR, "D2": DISCRIMINATOR}
    d_loss_names = ("D", "D2")
    loss_names = ("G_GAN", "D", "G_GAN2", "D2", "G_L1", "z_L1", "kl")
    visual_rows = (("real_A_encoded", "real_B_encoded", "fake_B_random", "fake_B_encoded"),)

    @classmethod
    def check_config(cls, cfg: BicycleGANConfig) -> None:
        super().check_config(cfg)
        if cfg.batch_size % 2:
            raise GantkError(f"--batch_size must be even for BicycleGAN (two halves), got {cfg.batch_size}")
        size = encoder_size(cfg.netE)
        if "crop" not in cfg.preprocess or cfg.crop_size != size:
            raise GantkError(f"--netE {cfg.netE} takes {size} px images: use --crop_size {size} with a crop "
                             f"preprocess (the *_128 encoders take 128 px, the *_256 ones 256 px)")

    def __init__(self, cfg: BicycleGANConfig, device="cpu", rank=0, world_size=1):
        super().__init__(cfg, device, rank, world_size)
        c, init = cfg, dict(init_type=cfg.init_type, init_gain=cfg.init_gain)
        self.nets = {"G": define_bicycle_G(c.input_nc, c.output_nc, c.nz, c.ngf, c.netG, c.norm, c.nl, c.use_dropout,
                                   c.where_add, c.upsample, **init),
                     "E": define_bicycle_E(c.output_nc, c.nz, c.nef, c.netE, c.norm, "lrelu", True, **init)}
        d_nc = c.input_nc + c.output_nc if c.conditional_D else c.output_nc
        if c.lambda_GAN > 0 or (c.use_same_D and c.lambda_GAN2 > 0):
            self.nets["D"] = define_bicycle_D(d_nc, c.ndf, c.netD, c.norm, num_Ds=c.num_Ds, **init)
        if c.lambda_GAN2 > 0 and not c.use_same_D:
            self.nets["D2"] = define_bicycle_D(d_nc, c.ndf, c.netD2, c.norm, num_Ds=c.num_Ds, **init)
        self.optimizers = {"G": self.adam("G", "E")}  # one Adam over G and E == the reference's two
        if self.discriminators:
            self.optimizers["D"] = self.adam(*self.discriminators)
        self.criterionGAN = GANLoss(c.gan_mode).to(self.device)
        self.criterionL1 = nn.L1Loss()
        self.skipped = 0

    def random_z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.nz, device=self.device)

    def d_input(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.cat([A, B], 1) if self.cfg.conditional_D else B

    def forward(self):
        half = self.real_A.size(0) // 2
        A, B = self.real_A, self.real_B
        self.real_A_encoded, self.real_B_encoded = A[:half], B[:half]  # A1, B1: the encoded branch
        self.real_A_random, self.real_B_random = A[half:], B[half:]  # B2: real images for D2
        self.mu, self.logvar = self.fwd["E"](self.real_B_encoded)
        self.z_encoded = self.mu + torch.exp(0.5 * self.logvar) * self.random_z(half)  # reparameterisation
        self.z_random = self.random_z(half)
        self.fake_B_encoded = self.fwd["G"](self.real_A_encoded, self.z_encoded)
        self.fake_B_random = self.fwd["G"](self.real_A_encoded, self.z_random)
        self.fake_data_encoded = self.d_input(self.real_A_encoded, self.fake_B_encoded)
        self.real_data_encoded = self.d_input(self.real_A_encoded, self.real_B_encoded)
        self.fake_data_random = self.d_input(self.real_A_encoded, self.fake_B_random)
        self.real_data_random = self.d_input(self.real_A_random, self.real_B_random)

    def gan_loss_G(self, name: str, fake: torch.Tensor, weight: float) -> torch.Tensor:
        if weight <= 0 or name not in self.nets:
            return torch.zeros((), device=self.device)
        return self.criterionGAN(self.frozen[name](fake), True) * weight

    def backward_EG(self):
        """GAN losses of both branches, L1 and KL (update G and E), plus the latent regression |E(G(A, z)) - z|
        through a frozen E (updates G only)."""
        c, L = self.cfg, self.losses
        L["G_GAN"] = self.gan_loss_G("D", self.fake_data_encoded, c.lambda_GAN)
        L["G_GAN2"] = self.gan_loss_G("D" if c.use_same_D else "D2", self.fake_data_random, c.lambda_GAN2)
        mu, logvar = self.mu.float(), self.logvar.float()
        L["kl"] = torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) * (-0.5 * c.lambda_kl)
        L["G_L1"] = self.criterionL1(self.fake_B_encoded.float(), self.real_B_encoded) * c.lambda_L1
        set_requires_grad(self.nets["E"], False)
        mu2, _ = self.frozen["E"](self.fake_B_random)
        set_requires_grad(self.nets["E"], True)
        L["z_L1"] = self.criterionL1(mu2.float(), self.z_random) * c.lambda_z
        self.precision.backward(L["G_GAN"] + L["G_GAN2"] + L["G_L1"] + L["kl"] + L["z_L1"])

    def backward_D(self):
        """Each D: GAN(D(real), real) + GAN(D(fake), fake), fakes detached; with use_same_D, D judges both."""
        L, fwd = self.losses, self.fwd
        def loss(name, real, fake):
            return self.criterionGAN(fwd[name](fake.detach()), False) + self.criterionGAN(fwd[name](real), True)
        if "D" in self.nets and self.cfg.lambda_GAN > 0:
            L["D"] = loss("D", self.real_data_encoded, self.fake_data_encoded)
        if self.cfg.lambda_GAN2 > 0:
            L["D2"] = loss("D" if self.cfg.use_same_D else "D2", self.real_data_random, self.fake_data_random)
        self.precision.backward(sum(L[n] for n in ("D", "D2") if n in L))  # one backward (DDP-safe)

    def optimize_parameters(self):
        if self.real_A.size(0) != self.cfg.batch_size:  # the reference skips incomplete batches
            self.skipped += 1
            if self.skipped == 1:
                log.warning("skipping an incomplete batch of %d (BicycleGAN needs --batch_size %d)",
                            self.real_A.size(0), self.cfg.batch_size)
            self.losses = {}
            return
        Ds = [self.nets[n] for n in self.discriminators]
        with self.precision.autocast():
            self.forward()
        set_requires_grad(Ds, False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.precision.autocast():
            self.backward_EG()
        self.precision.step(self.optimizers["G"])
        if Ds:
            set_requires_grad(Ds, True)
            self.optimizers["D"].zero_grad(set_to_none=True)
            with self.precision.autocast():
                self.backward_D()
            self.precision.step(self.optimizers["D"])
        self.precision.update()

    def current_visuals(self):
        """Before the first complete batch (e.g. a resumed epoch with only a skipped one) show the inputs."""
        return super().current_visuals() or {"real_A_encoded": self.real_A, "real_B_encoded": self.real_B}

