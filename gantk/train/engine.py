"""The training loop shared by every family: data, steps, logging, sample grids, checkpoints, resume."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gantk.checkpoints import TRAIN_STATE_FORMAT, atomic_save, load_state_dict_checked, read_checkpoint
from gantk.config import TrainConfig, require_positive
from gantk.data import EpochSampler
from gantk.errors import GantkError
from gantk.models.loading import write_sidecar
from gantk.models.registry import get_model_class
from gantk.runtime import resolve_device
from gantk.train.distributed import barrier, init_distributed, shutdown
from gantk.train.report import Reporter

log = logging.getLogger("gantk.train")
LATEST = "latest_state.pt"


def check_config(cfg: TrainConfig) -> None:
    """Reject bad option combinations before any work (shared checks, then the family's own)."""
    if not cfg.dataroot:
        raise GantkError("--dataroot is required: a folder in the reference layout (see `gantk data sample`)")
    if not Path(cfg.dataroot).is_dir():
        raise GantkError(f"--dataroot {cfg.dataroot}: no such folder")
    require_positive(cfg, "batch_size", "save_epoch_freq", "save_latest_freq", "print_freq", "display_freq")
    get_model_class(cfg.model_name()).check_config(cfg)


def save_nets(model, folder: Path, prefix: str) -> None:
    """Reference-compatible `<prefix>_net_<name>.pth` state dicts, one per network, and beside each generator
    (and encoder) its `.json` sidecar: family and architecture, so that loading guesses nothing."""
    family = model.cfg.model_name()
    for name, net in model.nets.items():
        path = atomic_save(net.state_dict(), folder / f"{prefix}_net_{name}.pth")
        if name in model.arch_nets:
            write_sidecar(path, family, name, model.net_arch(name))


def save_state(model, cfg, folder: Path, epoch: int, epoch_iter: int, steps: int, total_iters: int) -> None:
    """The resumable state (networks, optimizers, schedulers, scaler, pools, RNG, position, options)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"format": TRAIN_STATE_FORMAT, "model": cfg.model_name(), "config": cfg.to_dict(),
             "epoch": epoch, "epoch_iter": epoch_iter, "steps": steps, "total_iters": total_iters,
             "rng": rng, "arch": {name: model.net_arch(name) for name in model.arch_nets}, **model.state_dict()}
    atomic_save(state, folder / LATEST)
    save_nets(model, folder, "latest")


def resume(model, cfg, folder: Path) -> tuple[int, int, int, int]:
    """Load the latest training state (exact resume) or `<epoch>_net_*.pth` files (networks only)."""
    latest = folder / LATEST
    if cfg.epoch == "latest" and latest.is_file():
        state = read_checkpoint(latest)
        model.load_state_dict(state)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        return state["epoch"], state["epoch_iter"], state["steps"], state["total_iters"]
    for name, net in model.nets.items():
        path = folder / f"{cfg.epoch}_net_{name}.pth"
        load_state_dict_checked(net, read_checkpoint(path), str(path))
    return cfg.epoch_count, 0, 0, 0


def train(cfg: TrainConfig) -> Path:
    """Train `cfg`'s model family; returns the checkpoint folder."""
    check_config(cfg)
    rank, world = init_distributed(cfg.device)
    try:
        return _train(cfg, rank, world)
    finally:
        shutdown()


def _train(cfg: TrainConfig, rank: int, world: int) -> Path:
    device = resolve_device(cfg.device)
    folder = Path(cfg.checkpoints_dir) / cfg.name
    main = rank == 0
    model_cls = get_model_class(cfg.model_name())
    dataset = model_cls.make_dataset(cfg, "train")
    sampler = EpochSampler(len(dataset), shuffle=not cfg.serial_batches, seed=cfg.seed, rank=rank, world_size=world)
    # own generator: creating an epoch's iterator must not draw from the global RNG (exact resume)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                                         num_workers=cfg.num_threads, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(cfg.seed))
    torch.manual_seed(cfg.seed)
    model = model_cls(cfg, device, rank, world)
    model.setup()
    # training-time draws (dropout masks, latent codes): one stream per rank, saved with the state
    torch.manual_seed(cfg.seed * 7919 + 1009 + rank)
    epoch, epoch_iter, steps, total_iters = cfg.epoch_count, 0, 0, 0
    if cfg.continue_train:
        epoch, epoch_iter, steps, total_iters = resume(model, cfg, folder)
    last_epoch = cfg.epoch_count + cfg.n_epochs + cfg.n_epochs_decay - 1
    reporter = None
    if main:
        cfg.save(folder)
        reporter = Reporter(folder, f"{cfg.name} ({cfg.model_name()})", cfg.describe())
        tqdm.write(cfg.describe())
        tqdm.write(f"{len(dataset)} training images, {world} process(es) on {device}; "
                   f"checkpoints and samples in {folder}")
    images_per_step = cfg.batch_size * world
    model.train()
    while epoch <= last_epoch and not (cfg.max_iters and steps >= cfg.max_iters):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start=epoch_iter * cfg.batch_size)
        epoch_len = epoch_iter + len(loader)
        bar = tqdm(loader, desc=f"epoch {epoch}/{last_epoch}", disable=not main, leave=False,
                   initial=epoch_iter, total=epoch_len, dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 10.0)
        t_data_start = time.perf_counter()
        g_loss_sum, n_steps = 0.0, 0
        for batch in bar:
            t0 = time.perf_counter()
            model.set_input(batch)
            model.optimize_parameters()
            prev, steps, epoch_iter = total_iters, steps + 1, epoch_iter + 1
            total_iters += images_per_step
            losses = model.current_losses()
            g_loss_sum, n_steps = g_loss_sum + sum(v for k, v in losses.items() if k not in model.d_loss_names), n_steps + 1
            crossed = lambda freq: total_iters // freq > prev // freq
            if main:
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(losses.items())[:4]})
                if crossed(cfg.print_freq) or steps == 1:
                    t_comp = time.perf_counter() - t0
                    reporter.log_losses(epoch, total_iters, t_comp, t0 - t_data_start, losses, model.learning_rate())
                if crossed(cfg.display_freq):
                    reporter.save_samples(epoch, total_iters, model.current_visuals(), model.visual_rows)
                if crossed(cfg.save_latest_freq):
                    save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters)
            t_data_start = time.perf_counter()
            if cfg.max_iters and steps >= cfg.max_iters:
                break
        if epoch_iter >= epoch_len:  # the epoch ran to its end (also when --max_iters stopped on its last batch)
            if main:
                reporter.save_samples(epoch, total_iters, model.current_visuals(), model.visual_rows)
                if epoch % cfg.save_epoch_freq == 0 or epoch == last_epoch:
                    save_nets(model, folder, str(epoch))
            lr = model.update_learning_rate(g_loss_sum / max(n_steps, 1))
            epoch, epoch_iter = epoch + 1, 0
            if main:
                save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters)
                tqdm.write(f"end of epoch {epoch - 1}/{last_epoch}: {steps} iterations, learning rate now {lr:.7f}")
            barrier()
        if cfg.max_iters and steps >= cfg.max_iters:
            break
    if main:
        save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters)
        tqdm.write(f"saved {folder / LATEST} after {steps} iterations")
    barrier()
    return folder
