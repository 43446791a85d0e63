import importlib.util
import os
from pathlib import Path

import pytest
import torch

# Without a GPU, gantk.kernels' Triton kernels run in Triton's interpreter on CPU tensors. Triton reads
# this when the kernels are defined (first import of gantk.kernels), so it is set before any test runs.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gantk.data.sample import build_sample_data  # noqa: E402


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """The offline sample sets at 32 px (fast): {"unaligned": path, "aligned": path}."""
    return build_sample_data(tmp_path_factory.mktemp("datasets"), seed=0, size=32)


def tiny_args(dataroot, ckpt, name="t", **extra):
    """CLI arguments for a seconds-long CycleGAN run on 32 px crops."""
    args = ["train", "--model", "cyclegan", "--dataroot", str(dataroot), "--checkpoints_dir", str(ckpt),
            "--name", name, "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "36",
            "--crop_size", "32", "--max_dataset_size", "4", "--n_epochs", "1", "--n_epochs_decay", "2",
            "--num_threads", "0", "--print_freq", "1", "--display_freq", "2"]
    return args + cli_flags(**extra)


def cli_flags(**extra) -> list[str]:
    """--name value for each keyword (a bare --name for True)."""
    return [a for k, v in extra.items() for a in ([f"--{k}"] if v is True else [f"--{k}", str(v)])]


def load_benchmark_script(name: str):
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
