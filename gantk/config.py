"""Typed options, and every choice list of them: each family's config subclasses `TrainConfig` (the engine's
options), the image-to-image GANs also `GANOptions`; the CLI is generated from the fields."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from gantk.acceleration import AMP_DTYPES, KERNELS, KERNELS_HELP
from gantk.data.datasets import BAD_IMAGES, DATASET_MODES, DIRECTIONS
from gantk.data.transforms import PREPROCESS
from gantk.errors import GantkError
from gantk.nn.discriminators import NETD_NAMES
from gantk.nn.generators import NETG_NAMES
from gantk.nn.layers import INIT_TYPES, NORMS
from gantk.nn.losses import GAN_MODES

LR_POLICIES = ("linear", "step", "plateau", "cosine")
# held-out metrics a training run can keep its best networks by: name -> higher is better
EVAL_DIRECTIONS = {"psnr": True, "ssim": True, "mae": False, "cycle_mae": False, "kid": False, "fid": False}


def opt(default, help: str, choices: tuple | None = None, off: str | None = None, min: float | None = None,
        below: float | None = None):
    """A config field with CLI help; `choices` restricts values, `off` names a flag that sets a bool False;
    `min` (inclusive) and `below` (exclusive) bound numbers (`validate` checks them)."""
    return field(default=default, metadata={"help": help, "choices": choices, "off": off, "min": min, "below": below})


@dataclass
class TrainConfig:
    """What the training engine reads, for every family; names and defaults follow the reference options.
    Image-to-image GANs add `GANOptions`."""
    # experiment
    dataroot: str = opt("", "path to the training data")
    name: str = opt("experiment_name", "experiment name: checkpoints go to <checkpoints_dir>/<name>")
    checkpoints_dir: str = opt("./checkpoints", "where models are saved")
    seed: int = opt(0, "random seed for weights, data order and augmentation")
    # data
    batch_size: int = opt(1, "input batch size (per process under torchrun)", min=1)
    max_dataset_size: int = opt(0, "use at most this many images per domain (0: all)", min=0)
    serial_batches: bool = opt(False, "take images in order (no shuffling, paired B by index)")
    num_threads: int = opt(2, "data loading worker processes (0: load in the main process)", min=0)
    # optimisation
    lr: float = opt(0.0002, "initial Adam learning rate", min=0)
    beta1: float = opt(0.5, "Adam beta1", min=0, below=1)
    n_epochs: int = opt(100, "epochs at the initial learning rate", min=0)
    n_epochs_decay: int = opt(100, "epochs of linear decay to zero", min=0)
    lr_policy: str = opt("linear", "learning rate schedule", LR_POLICIES)
    lr_decay_iters: int = opt(50, "multiply by 0.1 every this many epochs (step policy)", min=1)
    epoch_count: int = opt(1, "number of the first epoch (to continue from <epoch>_net files)", min=1)
    max_iters: int = opt(0, "stop after this many iterations in total (0: run all epochs)", min=0)
    # saving and logging
    continue_train: bool = opt(False, "resume from the latest training state (or <epoch>_net files)")
    overwrite: bool = opt(False, "start a new run in an experiment folder that holds one (its files are replaced)")
    epoch: str = opt("latest", "which saved epoch to continue from")
    save_epoch_freq: int = opt(5, "save <epoch>_net files every this many epochs", min=1)
    save_latest_freq: int = opt(5000, "save the resumable latest state every this many iterations", min=1)
    print_freq: int = opt(100, "log losses every this many iterations", min=1)
    display_freq: int = opt(400, "save a sample grid every this many iterations", min=1)
    tensorboard: bool = opt(False, "also write a TensorBoard log to <experiment>/tensorboard/")
    # evaluation on the held-out split (test/ or val/)
    eval_freq: int = opt(0, "score the generator on the held-out split every this many epochs and after the "
                            "last, keeping best_net_* files (0: off)", min=0)
    eval_num: int = opt(50, "held-out images scored per evaluation", min=1)
    eval_metric: str = opt("auto", "metric that picks best_net_*: auto = psnr (paired), kid (cyclegan with "
                                   "Inception weights) or cycle_mae (cyclegan)", ("auto", *EVAL_DIRECTIONS))
    inception_weights: str = opt("", "pytorch-fid's Inception file for kid/fid (default: $GANTK_INCEPTION)")
    # speed
    amp: bool = opt(False, "mixed precision: bf16 autocast on CPU, fp16 (+GradScaler) on CUDA")
    amp_dtype: str = opt("auto", "autocast dtype", AMP_DTYPES)
    channels_last: bool = opt(False, "channels_last memory format for networks and inputs")
    compile: bool = opt(False, "torch.compile the generators and discriminators")
    kernels: str = opt("none", KERNELS_HELP, KERNELS)
    device: str = opt("auto", "cpu, cuda, cuda:N, or auto")
    bad_images: str = opt("fail", "on an unreadable image: stop naming it, or skip it with a warning", BAD_IMAGES)

    # --- helpers ---
    def validate(self) -> None:
        """One-line GantkError for the first option outside its choices or bounds."""
        for f in fields(self):
            v, md = getattr(self, f.name), f.metadata
            if md.get("choices") and v not in md["choices"]:
                raise GantkError(f"--{f.name} {v!r}: expected one of {', '.join(map(str, md['choices']))}")
            low, below = (next((c.__dataclass_fields__[f.name].metadata.get(k) for c in type(self).__mro__
                                if f.name in getattr(c, "__dataclass_fields__", {})
                                and c.__dataclass_fields__[f.name].metadata.get(k) is not None), None)
                          for k in ("min", "below"))  # a family's override keeps the bounds it redeclares
            if (low is not None and v < low) or (below is not None and v >= below):
                bounds = f"in [{low}, {below})" if below is not None else "positive" if low == 1 else f">= {low}"
                raise GantkError(f"--{f.name} must be {bounds}, got {v}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, **overrides):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**d, **overrides}.items() if k in names})

    def describe(self) -> str:
        """The options as the reference prints them, marking values that differ from the default."""
        lines = [f"----------------- Options ({type(self).__name__}) ---------------"]
        for f in fields(self):
            v = getattr(self, f.name)
            mark = "" if v == f.default else f"\t[default: {f.default}]"
            lines.append(f"{f.name:>25}: {v!s:<30}{mark}")
        lines.append("----------------- End -------------------")
        return "\n".join(lines)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train_opt.txt").write_text(self.describe() + "\n")
        (folder / "train_opt.json").write_text(json.dumps({"model": self.model_name(), **self.to_dict()}, indent=1))

    @classmethod
    def model_name(cls) -> str:
        return getattr(cls, "MODEL", "")


@dataclass
class GANOptions:
    """The image-to-image GANs' data layout, networks and objective (mixed into their configs)."""
    dataset_mode: str = opt("unaligned", "how the data set is laid out", DATASET_MODES)
    direction: str = opt("AtoB", "AtoB or BtoA", DIRECTIONS)
    input_nc: int = opt(3, "input image channels: 3 for RGB, 1 for grayscale", min=1)
    output_nc: int = opt(3, "output image channels", min=1)
    load_size: int = opt(286, "scale images to this size", min=1)
    crop_size: int = opt(256, "then crop to this size", min=1)
    preprocess: str = opt("resize_and_crop", "scaling and cropping at load time", PREPROCESS)
    no_flip: bool = opt(False, "do not flip images for augmentation")
    netG: str = opt("resnet_9blocks", "generator architecture", NETG_NAMES)
    netD: str = opt("basic", "discriminator: basic (70x70 PatchGAN), n_layers, pixel", NETD_NAMES)
    n_layers_D: int = opt(3, "discriminator layers when --netD n_layers", min=1)
    ngf: int = opt(64, "generator filters in the last conv layer", min=1)
    ndf: int = opt(64, "discriminator filters in the first conv layer", min=1)
    norm: str = opt("instance", "normalisation layer", NORMS)
    no_dropout: bool = opt(False, "no dropout in the generator", off="dropout")
    init_type: str = opt("normal", "weight initialisation", INIT_TYPES)
    init_gain: float = opt(0.02, "scale for normal, xavier and orthogonal init", min=0)
    gan_mode: str = opt("lsgan", "GAN objective", GAN_MODES)

    @property
    def use_dropout(self) -> bool:
        return not self.no_dropout
