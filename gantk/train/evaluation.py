"""Scoring the generator on the held-out split during training (--eval_freq) and remembering the best value.

Paired families (pix2pix, BicycleGAN with z = E(B) as its test script's encoded sample): PSNR, SSIM, MAE of
the output against the ground truth. CycleGAN has no ground truth: `cycle_mae` (MAE of A -> B -> A and
B -> A -> B against the input, a proxy for how well the mapping keeps content, not for realism), plus KID
and FID of G(A) against the real B images given Inception weights, with
`gantk eval`'s default protocol (8-bit images, clean-fid resize).
Generators run on copies in their test-time mode (`prepare_for_inference`, as `gantk translate` does),
under a forked RNG seeded with --seed, so evaluating never changes training."""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from gantk.config import EVAL_DIRECTIONS, TrainConfig
from gantk.data import make_dataset
from gantk.errors import GantkError
from gantk.io import tensor_to_image
from gantk.metrics import extract_features, fid_from_features, fid_input, kid, mae, psnr, ssim
from gantk.models import prepare_for_inference
from gantk.models.bicyclegan import encode
from gantk.models.registry import FAMILIES, get_family
from gantk.nn.inception import WEIGHTS_ENV, load_fid_inception, resolve_inception_weights
from gantk.nn.inference import has_batchnorm

log = logging.getLogger("gantk.train")
BEST_STATE = "best_state.json"
PAIRED = ("psnr", "ssim", "mae")
METRICS = {"paired": PAIRED, "cycle": ("cycle_mae", "kid", "fid")}  # by the registry's Family.scoring
INCEPTION_OPTION = "--inception_weights"


def has_inception(cfg: TrainConfig) -> bool:
    return bool(cfg.inception_weights or os.environ.get(WEIGHTS_ENV))


def chosen_metric(cfg: TrainConfig) -> str:
    """--eval_metric, with auto resolved: psnr (paired), kid (CycleGAN given Inception weights), else cycle_mae."""
    if cfg.eval_metric != "auto":
        return cfg.eval_metric
    if get_family(cfg.model_name()).scoring == "cycle":
        return "kid" if has_inception(cfg) else "cycle_mae"
    return "psnr"


def held_out_phase(cfg: TrainConfig) -> str:
    """The held-out split of the reference layouts: test/ (testA/ + testB/), else val/ (valA/ + valB/)."""
    root, unaligned = Path(cfg.dataroot), cfg.dataset_mode == "unaligned"
    for phase in ("test", "val"):
        if all(f.is_dir() for f in ([root / f"{phase}A", root / f"{phase}B"] if unaligned else [root / phase])):
            return phase
    expected = "testA/ and testB/ (or valA/ and valB/)" if unaligned else "test/ (or val/) with A|B pairs"
    raise GantkError(f"--eval_freq: {root} has no held-out split; expected {expected}")


def check_eval_config(cfg: TrainConfig) -> None:
    """One-line errors for evaluation options this run cannot honour, before any training."""
    if not cfg.eval_freq:
        return
    family, scoring = cfg.model_name(), get_family(cfg.model_name()).scoring
    if scoring is None:
        raise GantkError(f"--eval_freq: no held-out metric for --model {family} "
                         f"(supported: {', '.join(f.name for f in FAMILIES.values() if f.scoring)})")
    metric = chosen_metric(cfg)
    if metric not in METRICS[scoring]:
        raise GantkError(f"--eval_metric {metric}: not scored for --model {family}; expected one of "
                         f"{', '.join(METRICS[scoring])}")
    if scoring == "paired" and cfg.dataset_mode != "aligned":
        raise GantkError(f"--eval_freq with --model {family} scores against paired targets: "
                         f"needs --dataset_mode aligned, got {cfg.dataset_mode}")
    if metric in ("kid", "fid"):
        resolve_inception_weights(cfg.inception_weights or None, INCEPTION_OPTION)
    held_out_phase(cfg)


def inference_copy(net: torch.nn.Module, eval_mode: bool | None = None) -> torch.nn.Module:
    """A copy of `net` in its test-time mode; default as `gantk translate`: batch statistics and dropout
    for BatchNorm networks (the reference test script), eval mode otherwise."""
    return prepare_for_inference(copy.deepcopy(net), not has_batchnorm(net) if eval_mode is None else eval_mode)


def read_best(folder: Path, metric: str) -> float | None:
    """The best value so far from best_state.json, if it ranks by `metric`."""
    path = folder / BEST_STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        ranked_by, value = state["metric"], float(state["value"])
    except (ValueError, KeyError, TypeError) as e:
        raise GantkError(f"{path}: unreadable ({e!r}); delete it to restart the best networks") from None
    if ranked_by != metric:
        log.warning("%s ranks by %s, this run by %s: the best networks restart from this run's first evaluation",
                    path, ranked_by, metric)
        return None
    return value


class Evaluator:
    """Scores a model on up to --eval_num held-out images and tracks the best value of the chosen metric
    (read back from best_state.json when resuming)."""

    def __init__(self, cfg: TrainConfig, folder: Path):
        self.cfg, self.folder = cfg, folder
        self.metric = chosen_metric(cfg)
        self.higher = EVAL_DIRECTIONS[self.metric]
        self.phase = held_out_phase(cfg)
        self.data = make_dataset(cfg, self.phase, train=False)
        self.count = min(cfg.eval_num, len(self.data))
        self.best = read_best(folder, self.metric) if cfg.continue_train else None
        self.inception = None

    def pairs(self, device):
        """(real_A, real_B) of the first --eval_num held-out items, 1CHW on `device`, swapped by --direction."""
        for i in range(self.count):
            item = self.data[i]
            a, b = (item["B"], item["A"]) if self.cfg.direction == "BtoA" else (item["A"], item["B"])
            yield a[None].to(device), b[None].to(device)

    def evaluate(self, model, epoch: int, iters: int) -> dict:
        """One eval.jsonl row: position, every metric that applies, the inference mode, and whether it is the
        best value of the chosen metric so far."""
        with torch.no_grad(), torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            scores, inference = SCORERS[get_family(self.cfg.model_name()).scoring](self, model)
        value = scores[self.metric]
        is_best = self.best is None or (value > self.best if self.higher else value < self.best)
        if is_best:
            self.best = value
        return {"epoch": epoch, "iters": iters, "phase": self.phase, "images": self.count, **scores,
                "inference": inference, "metric": self.metric, "best": is_best}

    def inception_net(self, device):
        if self.inception is None:
            self.inception = load_fid_inception(self.cfg.inception_weights or None, device, INCEPTION_OPTION)
        return self.inception


def best_state_text(row: dict) -> str:
    """best_state.json: which evaluation the best_net_* files come from."""
    keys = ("epoch", "iters", "phase", "images", "metric")
    return json.dumps({**{k: row[k] for k in keys}, "value": row[row["metric"]],
                       "higher_is_better": EVAL_DIRECTIONS[row["metric"]]}, indent=1) + "\n"


def score_paired(ev: Evaluator, model) -> tuple[dict, dict]:
    """PSNR/SSIM/MAE of G(A) (BicycleGAN: G(A, E(B)), eval mode as its test script) against B, averaged."""
    bicycle = "E" in model.nets
    G = inference_copy(model.nets["G"], True if bicycle else None)
    E = inference_copy(model.nets["E"], True) if bicycle else None
    values = {m: [] for m in PAIRED}
    for a, b in ev.pairs(model.device):
        fake = G(a, encode(E, b)) if bicycle else G(a)
        for name, fn in zip(PAIRED, (psnr, ssim, mae)):
            values[name].append(fn(fake, b))
    return {m: float(np.mean(v)) for m, v in values.items()}, G.inference


def fid_image(t: torch.Tensor) -> torch.Tensor:
    """An image in [-1, 1] as `gantk eval` reads it once saved: 8-bit RGB, clean-fid's resize to 299 px."""
    return fid_input(np.asarray(tensor_to_image(t).convert("RGB")))


def score_cyclegan(ev: Evaluator, model) -> tuple[dict, dict]:
    """cycle_mae over both cycles; with Inception weights KID and FID of G_A(A) against the real B images."""
    G_A, G_B = inference_copy(model.nets["G_A"]), inference_copy(model.nets["G_B"])
    cycle, fakes, reals = [], [], []
    for a, b in ev.pairs(model.device):
        fake_b = G_A(a)
        cycle += [mae(G_B(fake_b), a), mae(G_A(G_B(b)), b)]
        fakes.append(fid_image(fake_b))
        reals.append(fid_image(b))
    scores = {"cycle_mae": float(np.mean(cycle))}
    if has_inception(ev.cfg):
        net = ev.inception_net(model.device)
        f_fake, f_real = (extract_features(net, x, device=model.device) for x in (fakes, reals))
        scores["kid"], scores["fid"] = kid(f_fake, f_real)[0], fid_from_features(f_fake, f_real)
    return scores, G_A.inference


SCORERS = {"paired": score_paired, "cycle": score_cyclegan}
