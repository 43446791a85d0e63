"""The training loop shared by every family: data, steps, logging, sample grids, checkpoints, resume."""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gantk.checkpoints import TRAIN_STATE_FORMAT, load_state_dict_checked, read_checkpoint, save_files
from gantk.config import EVAL_DIRECTIONS, TrainConfig
from gantk.data import EpochSampler
from gantk.errors import CheckpointError, GantkError
from gantk.io import check_writable
from gantk.models.loading import sidecar_path, sidecar_text
from gantk.models.registry import get_model_class
from gantk.runtime import resolve_device
from gantk.train.distributed import any_rank, barrier, gather, init_distributed, shutdown
from gantk.train.evaluation import BEST_STATE, Evaluator, best_state_text, check_eval_config
from gantk.train.lock import ExperimentLock
from gantk.train.report import Reporter, require_tensorboard

log = logging.getLogger("gantk.train")
LATEST = "latest_state.pt"


def check_config(cfg: TrainConfig) -> None:
    """Reject bad option combinations before any work (shared checks, then the family's own)."""
    if not cfg.dataroot:
        raise GantkError("--dataroot is required: a folder in the reference layout (see `gantk data sample`)")
    if not Path(cfg.dataroot).is_dir():
        raise GantkError(f"--dataroot {cfg.dataroot}: no such folder")
    cfg.validate()
    resolve_device(cfg.device)
    check_writable(Path(cfg.checkpoints_dir) / cfg.name, "--checkpoints_dir/--name", folder=True)
    get_model_class(cfg.model_name()).check_config(cfg)
    check_eval_config(cfg)
    if cfg.tensorboard:
        require_tensorboard()
    latest = Path(cfg.checkpoints_dir) / cfg.name / LATEST
    if latest.is_file() and not (cfg.continue_train or cfg.overwrite):
        raise GantkError(f"{latest} holds a trained experiment: resume it with --continue_train, or start again "
                         "over it with --overwrite (or choose another --name)")


def net_files(model, folder: Path, prefix: str, step: int) -> dict:
    """Reference-compatible `<prefix>_net_<name>.pth` state dicts, one per network, and beside each generator
    (and encoder) its `.json` sidecar (family, architecture, iteration), so that loading guesses nothing."""
    family, files = model.cfg.model_name(), {}
    for name, net in model.nets.items():
        path = folder / f"{prefix}_net_{name}.pth"
        files[path] = net.state_dict()
        if name in model.arch_nets:
            files[sidecar_path(path)] = sidecar_text(family, name, model.net_arch(name), step)
    return files


def check_finite(model) -> None:
    """Refuse to save non-finite weights over good ones."""
    bad = next((f"{n}.{k}" for n, net in model.nets.items() for k, p in net.state_dict().items()
                if p.is_floating_point() and not torch.isfinite(p).all()), None)
    if bad:
        raise GantkError(f"non-finite weights in {bad}: not saved, the files on disk keep the last good state")


def save_nets(model, folder: Path, prefix: str, step: int, extra: dict | None = None) -> None:
    """`<prefix>_net_*` files (and `extra` {path: content} files) written as one set."""
    check_finite(model)
    save_files({**net_files(model, folder, prefix, step), **(extra or {})})


def evaluate(model, evaluator: Evaluator, reporter: Reporter, folder: Path, epoch: int, total_iters: int) -> None:
    """Score the held-out split; a new best value saves best_net_* and best_state.json as one set."""
    row = evaluator.evaluate(model, epoch, total_iters)
    if row["best"]:
        save_nets(model, folder, "best", total_iters, {folder / BEST_STATE: best_state_text(row)})
    reporter.log_eval(row)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k in EVAL_DIRECTIONS)
    tqdm.write(f"held-out {row['phase']} ({row['images']} images) after epoch {epoch}: {scores}"
               + (f"; best {row['metric']} so far: saved best_net_*" if row["best"] else ""))


def rank_state(model) -> dict:
    """What differs between torchrun processes: RNG streams and the family's extra state (image pools)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"rng": rng, "extra": model.extra_state()}


def save_state(model, cfg, folder: Path, epoch: int, epoch_iter: int, steps: int, total_iters: int,
               ranks: list[dict]) -> None:
    """The resumable state (networks, optimizers, schedulers, scaler, position, options, and every process's
    RNG and pools: `ranks`, from `gather(rank_state(model))`) and the `latest_net_*` files, written as one set."""
    check_finite(model)
    state = {"format": TRAIN_STATE_FORMAT, "model": cfg.model_name(), "config": cfg.to_dict(),
             "epoch": epoch, "epoch_iter": epoch_iter, "steps": steps, "total_iters": total_iters,
             "arch": {name: model.net_arch(name) for name in model.arch_nets}, **model.state_dict(),
             "rng": ranks[0]["rng"], "extra": ranks[0]["extra"], "ranks": ranks}
    save_files({**net_files(model, folder, "latest", total_iters), folder / LATEST: state})


def resume(model, cfg, folder: Path, rank: int = 0, world: int = 1) -> tuple[int, int, int, int]:
    """Load the latest training state (exact resume) or `<epoch>_net_*.pth` files (networks only)."""
    latest = folder / LATEST
    if cfg.epoch == "latest" and latest.is_file():
        state = read_checkpoint(latest)
        if state.get("format") != TRAIN_STATE_FORMAT or state.get("model") != cfg.model_name():
            raise CheckpointError(f"{latest}: not a gantk {cfg.model_name()} training state (it holds "
                                  f"{state.get('model') or 'something else'}); resume it with --model "
                                  f"{state.get('model')}, or start anew with --overwrite")
        ranks = state.get("ranks") or [{"rng": state["rng"], "extra": state.get("extra", {})}]
        if len(ranks) != world:
            log.warning("%s was saved by %d process(es), this run has %d: each process resumes with process 0's "
                        "RNG state and image pools (not an exact resume)", latest, len(ranks), world)
        own = ranks[rank] if len(ranks) == world else ranks[0]
        model.load_state_dict({**state, "extra": own["extra"]})
        torch.set_rng_state(own["rng"]["torch"])
        if "cuda" in own["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(own["rng"]["cuda"])
        return state["epoch"], state["epoch_iter"], state["steps"], state["total_iters"]
    for name, net in model.nets.items():
        path = folder / f"{cfg.epoch}_net_{name}.pth"
        load_state_dict_checked(net, read_checkpoint(path), str(path))
    return cfg.epoch_count, 0, 0, 0


def train(cfg: TrainConfig) -> Path:
    """Train `cfg`'s model family; returns the checkpoint folder. The first process holds the experiment's
    lock for the whole run."""
    check_config(cfg)
    rank, world = init_distributed(cfg.device)
    try:
        with ExperimentLock(Path(cfg.checkpoints_dir) / cfg.name) if rank == 0 else contextlib.nullcontext():
            return _train(cfg, rank, world)
    finally:
        shutdown()


@contextlib.contextmanager
def stop_on_sigterm():
    """Yields a dict whose "stop" turns True on SIGTERM (preemption), so the loop can save and leave."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, old)


def check_losses(losses: dict, epoch: int, steps: int, folder: Path) -> None:
    """Stop on the first non-finite loss, before anything is saved."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        kept = f"{folder / LATEST} keeps the last good state" if (folder / LATEST).is_file() else \
            "no state had been saved yet"
        raise GantkError(f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}) at epoch {epoch}, "
                         f"iteration {steps}: stopped without saving; {kept} (try a lower --lr)")


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
        epoch, epoch_iter, steps, total_iters = resume(model, cfg, folder, rank, world)
    reporter = evaluator = None
    if main:
        for stale in folder.glob(".*.tmp"):  # temp files of saves killed midway
            stale.unlink(missing_ok=True)
        cfg.save(folder)
        reporter = Reporter(folder, f"{cfg.name} ({cfg.model_name()})", cfg.describe(), cfg.tensorboard, total_iters)
        reporter.trim_eval(total_iters)
        evaluator = Evaluator(cfg, folder) if cfg.eval_freq else None
        tqdm.write(cfg.describe())
        tqdm.write(f"{len(dataset)} training images, {world} process(es) on {device}; "
                   f"checkpoints and samples in {folder}")
    model.train()
    with stop_on_sigterm() as sigterm, contextlib.closing(reporter) if main else contextlib.nullcontext():
        epoch, epoch_iter, steps, total_iters = _loop(cfg, model, dataset, sampler, loader, reporter, evaluator,
                                                      folder, main, (epoch, epoch_iter, steps, total_iters), world,
                                                      sigterm)
    ranks = gather(rank_state(model))
    if main:
        save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters, ranks)
        tqdm.write(f"saved {folder / LATEST} after {steps} iterations")
    barrier()
    if sigterm["stop"]:
        raise GantkError(f"stopped by SIGTERM after iteration {steps}; the state is saved: resume with --continue_train")
    return folder


def _loop(cfg, model, dataset, sampler, loader, reporter, evaluator, folder, main, position, world, sigterm):
    """The epochs from `position` (epoch, epoch_iter, steps, total_iters) on; returns where it stopped."""
    epoch, epoch_iter, steps, total_iters = position
    last_epoch = cfg.epoch_count + cfg.n_epochs + cfg.n_epochs_decay - 1
    images_per_step = cfg.batch_size * world
    while epoch <= last_epoch and not (cfg.max_iters and steps >= cfg.max_iters) and not sigterm["stop"]:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, start=epoch_iter * cfg.batch_size)
        epoch_len = epoch_iter + len(loader)
        bar = tqdm(loader, desc=f"epoch {epoch}/{last_epoch}", disable=not main, leave=False,
                   initial=epoch_iter, total=epoch_len, dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 10.0)
        t_data_start = time.perf_counter()
        g_loss_sum, n_steps = 0.0, 0
        for batch in batches(bar, cfg):
            t0 = time.perf_counter()
            model.set_input(batch)
            model.optimize_parameters()
            losses = model.current_losses()
            check_losses(losses, epoch, steps + 1, folder)
            prev, steps, epoch_iter = total_iters, steps + 1, epoch_iter + 1
            total_iters += images_per_step
            g_loss_sum, n_steps = g_loss_sum + sum(v for k, v in losses.items() if k not in model.d_loss_names), n_steps + 1
            crossed = lambda freq: total_iters // freq > prev // freq
            if main:
                bar.set_postfix({k: f"{v:.3f}" for k, v in list(losses.items())[:4]})
                if crossed(cfg.print_freq) or steps == 1:
                    t_comp = time.perf_counter() - t0
                    reporter.log_losses(epoch, total_iters, t_comp, t0 - t_data_start, losses, model.learning_rate(),
                                        {k: o.param_groups[0]["lr"] for k, o in model.optimizers.items()})
                if crossed(cfg.display_freq):
                    reporter.save_samples(epoch, total_iters, model.current_visuals(), model.visual_rows)

            if crossed(cfg.save_latest_freq):  # every process's RNG and pools go into the state
                ranks = gather(rank_state(model))
                if main:
                    save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters, ranks)
            t_data_start = time.perf_counter()
            sigterm["stop"] = any_rank(sigterm["stop"])
            if (cfg.max_iters and steps >= cfg.max_iters) or sigterm["stop"]:
                break
        if epoch_iter >= epoch_len:  # the epoch ran to its end (also when --max_iters stopped on its last batch)
            if main:
                reporter.save_samples(epoch, total_iters, model.current_visuals(), model.visual_rows)
                if epoch % cfg.save_epoch_freq == 0 or epoch == last_epoch:
                    save_nets(model, folder, str(epoch), total_iters)
                if evaluator and (epoch % cfg.eval_freq == 0 or epoch == last_epoch):
                    evaluate(model, evaluator, reporter, folder, epoch, total_iters)
            lr = model.update_learning_rate(g_loss_sum / max(n_steps, 1))
            epoch, epoch_iter = epoch + 1, 0
            ranks = gather(rank_state(model))
            if main:
                save_state(model, cfg, folder, epoch, epoch_iter, steps, total_iters, ranks)
                tqdm.write(f"end of epoch {epoch - 1}/{last_epoch}: {steps} iterations, learning rate now {lr:.7f}")
            barrier()
        if cfg.max_iters and steps >= cfg.max_iters:
            break
    return epoch, epoch_iter, steps, total_iters


def batches(loader, cfg):
    """The loader's batches; images of different sizes that cannot form a batch stop with one line."""
    it = iter(loader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except RuntimeError as e:
            if "stack expects each tensor to be equal size" not in str(e):
                raise
            raise GantkError(f"--preprocess {cfg.preprocess} with --batch_size {cfg.batch_size}: the images of a "
                             "batch differ in size; use a crop preprocess or --batch_size 1") from None
