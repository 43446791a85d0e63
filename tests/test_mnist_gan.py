"""Given MNIST IDX files (here: scikit-learn's real digits written by `gantk data sample`), `gantk train
--model mnist_gan` trains the tutorial's MLP GAN, writes fixed-noise sample grids and resumes exactly."""
import gzip
import struct

import numpy as np
import pytest
import torch

from conftest import cli_flags
from gantk.cli import main
from gantk.data.sample import DIGITS_TRAIN, build_digits
from gantk.errors import DataError
from gantk.data.mnist import load_mnist, read_idx
from gantk.nn.mlp import mlp_discriminator, mlp_generator

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return build_digits(tmp_path_factory.mktemp("datasets"))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format written out: 0, 0, type 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    return bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def test_digits_are_mnist_style_idx_files(digits, tmp_path):
    images, labels = load_mnist(digits)
    assert images.shape == (DIGITS_TRAIN, 28, 28) and images.dtype == np.uint8 and labels.shape == (DIGITS_TRAIN,)
    assert set(labels.tolist()) == set(range(10)) and images.max() == 255
    assert images[:, :4].max() == 0 and images[:, :, -4:].max() == 0  # a 20x20 digit centred in 28x28
    test_images, test_labels = load_mnist(digits, "t10k")
    assert len(test_images) == len(test_labels) == 1797 - DIGITS_TRAIN
    raw = gzip.decompress((digits / "train-labels-idx1-ubyte.gz").read_bytes())
    assert raw[:8] == bytes([0, 0, 8, 1]) + struct.pack(">I", DIGITS_TRAIN)
    again = build_digits(tmp_path, overwrite=True)
    assert all((digits / f).read_bytes() == (again / f).read_bytes() for f in ("train-images-idx3-ubyte.gz", "README.txt"))


def test_read_idx_plain_file(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x").write_bytes(idx_bytes(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), a)


@pytest.mark.parametrize("name,content,message", [
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5], "truncated or corrupt"),
    ("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + bytes(20), "bad magic number"),
    ("train-images-idx3-ubyte.gz", b"not gzip at all", "cannot read"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((3, 32, 32), np.uint8)), "expected N x 28 x 28 images"),
    (None, b"", "train-images-idx3-ubyte[.gz]: MNIST IDX file not found"),
])
def test_bad_idx_files_are_one_line_errors_naming_the_file(tmp_path, capsys, name, content, message):
    if name:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    code = main(["train", "--model", "mnist_gan", "--dataroot", str(tmp_path), "--checkpoints_dir", str(tmp_path / "ck")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_labels_must_match_images(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: \\(2,\\) labels for 3 images"):
        load_mnist(tmp_path)


def test_networks_are_the_tutorial_s():
    G, D = mlp_generator(), mlp_discriminator()
    assert [k for k in G.state_dict()] == [k for k in D.state_dict()] == [f"{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    assert sum(p.numel() for p in G.parameters()) == (64 * 256 + 256) + (256 * 256 + 256) + (256 * 784 + 784)
    assert sum(p.numel() for p in D.parameters()) == (784 * 256 + 256) + (256 * 256 + 256) + (256 + 1)
    assert [type(m).__name__ for m in G] == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Tanh", "Unflatten"]
    assert [getattr(m, "negative_slope", None) for m in D][1::2] == [0.2, 0.2]
    assert G(torch.randn(5, 64)).shape == (5, 1, 28, 28)


def mnist_args(dataroot, ckpt, name="m", **extra):
    args = ["train", "--model", "mnist_gan", "--dataroot", str(dataroot), "--checkpoints_dir", str(ckpt),
            "--name", name, "--max_dataset_size", "200", "--batch_size", "50", "--n_epochs", "2",
            "--num_threads", "0", "--print_freq", "50", "--n_samples", "16"]
    return args + cli_flags(**extra)


def test_trains_an_epoch_with_sample_grids(digits, tmp_path):
    assert main(mnist_args(digits, tmp_path, n_epochs=1)) == 0
    run = tmp_path / "m"
    assert sorted(p.name for p in (run / "web" / "images").glob("*.png")) == ["epoch001_iter0000200.png"]
    rows = (run / "losses.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all(k in rows[0] for k in ('"D_real"', '"D_fake"', '"G"'))
    G = mlp_generator()
    G.load_state_dict(torch.load(run / "latest_net_G.pth", weights_only=True))
    state = torch.load(run / "latest_state.pt", weights_only=True)
    assert (state["steps"], state["epoch"]) == (4, 2) and state["config"]["latent_dim"] == 64


def test_resume_is_exact(digits, tmp_path):
    """7 iterations straight == 3 + resume + 4 (4 per epoch: crosses an epoch end; noise stream restored)."""
    assert main(mnist_args(digits, tmp_path, "straight", max_iters=7)) == 0
    assert main(mnist_args(digits, tmp_path, "resumed", max_iters=3)) == 0
    assert main(mnist_args(digits, tmp_path, "resumed", max_iters=7, continue_train=True)) == 0
    for net in ("G", "D"):
        a = torch.load(tmp_path / "straight" / f"latest_net_{net}.pth", weights_only=True)
        b = torch.load(tmp_path / "resumed" / f"latest_net_{net}.pth", weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{net}.{k}")
