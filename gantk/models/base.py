"""The model contract (set_input / optimize_parameters / losses / visuals) and the speed plumbing
every family shares: device, AMP, channels_last, torch.compile, DDP, LR schedules, state dicts."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from gantk.checkpoints import load_state_dict_checked
from gantk.errors import CheckpointError, GantkError
from gantk.acceleration import Precision, apply_kernels
from gantk.config import TrainConfig
from gantk.data import make_dataset
from gantk.nn.generators import UNET_DOWNS, size_multiple

log = logging.getLogger("gantk.train")
GENERATOR, ENCODER, DISCRIMINATOR = "generator", "encoder", "discriminator"


def lr_lambda(cfg: TrainConfig):
    """Reference 'linear' rule: factor 1 for n_epochs, then linear to ~0 over n_epochs_decay (epochs 1-based)."""
    def rule(k: int) -> float:  # k = scheduler steps taken = epochs finished since epoch_count
        return 1.0 - max(0, k + cfg.epoch_count - cfg.n_epochs) / float(cfg.n_epochs_decay + 1)
    return rule


def make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.lr_policy == "linear":
        return lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    if cfg.lr_policy == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.lr_decay_iters, gamma=0.1)
    if cfg.lr_policy == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.n_epochs, eta_min=0)


class BaseModel:
    """A model family: networks by name, one training step, losses and visuals by name."""

    Config = TrainConfig
    # every network's role: GENERATOR or ENCODER (saved with an architecture sidecar, run at inference) or
    # DISCRIMINATOR (training only); the losses of the discriminators' steps (left out of the plateau metric)
    roles: dict[str, str] = {}
    d_loss_names: tuple[str, ...] = ()
    loss_names: tuple[str, ...] = ()
    visual_rows: tuple[tuple[str, ...], ...] = ()  # how sample grids lay out the visuals

    @property
    def arch_nets(self) -> list[str]:
        """The networks whose architecture is saved beside them (generators and encoders)."""
        return [n for n in self.nets if self.roles.get(n) in (GENERATOR, ENCODER)]

    @property
    def discriminators(self) -> list[str]:
        return [n for n in self.nets if self.roles.get(n) == DISCRIMINATOR]

    def net_arch(self, name: str) -> dict:
        return dict(getattr(self.nets[name], "arch", {}))

    @property
    def visual_names(self) -> tuple[str, ...]:
        return tuple(n for row in self.visual_rows for n in row)

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.precision = Precision(cfg.amp, cfg.amp_dtype, self.device)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.fwd: dict[str, nn.Module] = {}     # what training calls: compiled and/or DDP-wrapped
        self.frozen: dict[str, nn.Module] = {}  # compiled only: for networks whose grads are off this step
        self.losses: dict[str, torch.Tensor] = {}

    # --- hooks the engine calls before building the model ---
    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Reject option combinations this family cannot train (one-line GantkError); here: the image GANs'."""
        m = size_multiple(cfg.netG)
        if cfg.netG in UNET_DOWNS and "crop" in cfg.preprocess and cfg.crop_size % m:
            raise GantkError(f"--netG {cfg.netG} needs --crop_size divisible by {m}, got {cfg.crop_size}")
        if cfg.netG in UNET_DOWNS and cfg.preprocess == "none":
            raise GantkError(f"--netG {cfg.netG} needs fixed-size inputs divisible by {m}: use a crop preprocess")

    @classmethod
    def make_dataset(cls, cfg: TrainConfig, phase: str):
        """The training data set (by --dataset_mode unless a family needs its own)."""
        return make_dataset(cfg, phase)

    # --- set-up shared by all families ---
    def adam(self, *names: str) -> torch.optim.Optimizer:
        params = [p for n in names for p in self.nets[n].parameters()]
        # fused: one kernel per step, not ~10 ops per tensor (the same update; measured on CPU for two ResNet
        # generators' parameters: 121 ms -> 16 ms per step)
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=(self.cfg.beta1, 0.999), fused=True)

    def setup(self) -> None:
        """Move networks to the device and apply channels_last / kernels / compile / DDP; build LR schedulers."""
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        if self.cfg.compile and self.cfg.kernels == "winograd":
            log.warning("--kernels winograd with --compile: torch.compile compiles the plain convolutions, so "
                        "winograd changes nothing; use one or the other (on CPU, winograd alone is faster)")
        for name, net in self.nets.items():
            net.to(self.device, memory_format=fmt)
            apply_kernels(net, self.cfg.kernels, warn=self.roles[name] != DISCRIMINATOR)
            core = torch.compile(net) if self.cfg.compile else net
            self.frozen[name] = core
            if self.world_size > 1 and any(p.requires_grad for p in net.parameters()):
                ids = [self.device.index] if self.device.type == "cuda" else None
                core = nn.parallel.DistributedDataParallel(core, device_ids=ids)
            self.fwd[name] = core
        self.schedulers = {k: make_scheduler(o, self.cfg) for k, o in self.optimizers.items()}

    def to_input(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else t

    def train(self, mode: bool = True) -> None:
        for net in self.nets.values():
            net.train(mode)

    # --- the contract each family implements ---
    def set_input(self, batch: dict) -> None:
        """real_A / real_B from an {A, B} batch, swapped by --direction (families with other data override)."""
        a2b = self.cfg.direction == "AtoB"
        self.real_A = self.to_input(batch["A" if a2b else "B"])
        self.real_B = self.to_input(batch["B" if a2b else "A"])

    def optimize_parameters(self) -> None:
        raise NotImplementedError

    def current_losses(self) -> dict[str, float]:
        return {k: float(self.losses[k].detach()) for k in self.loss_names if k in self.losses}

    def current_visuals(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach() for k in self.visual_names if hasattr(self, k)}

    def extra_state(self) -> dict:
        """Family-specific state to resume exactly (e.g. image pools)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # --- schedules and state ---
    def update_learning_rate(self, metric: float = 0.0) -> float:
        for s in self.schedulers.values():
            s.step(metric) if isinstance(s, lr_scheduler.ReduceLROnPlateau) else s.step()
        return self.learning_rate()

    def learning_rate(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.precision.scaler.state_dict(),
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for group in ("nets", "optimizers", "schedulers"):
            missing = [k for k in getattr(self, group) if k not in state.get(group, {})]
            if missing:
                raise CheckpointError(f"the saved training state has no {group} {', '.join(missing)} that this "
                                      f"{self.cfg.model_name()} run needs (saved with other options?)")
        for k, net in self.nets.items():
            load_state_dict_checked(net, state["nets"][k], f"saved network {k}")
        for group in ("optimizers", "schedulers"):
            for k, obj in getattr(self, group).items():
                obj.load_state_dict(state[group][k])
        if state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state.get("extra", {}))
