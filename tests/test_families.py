"""Given the family registry and the one generator loader: every family builds, trains and is found again from
its experiment or file; gantk's own files say what they hold (nothing guessed), reference files are read off
their keys, and families without an image-to-image generator are refused in one line."""
import json

import pytest
import torch

from conftest import tiny_args
from gantk.cli import main
from gantk.errors import CheckpointError
from gantk.models import FAMILIES, define_G, load, load_generator
from gantk.models.loading import write_sidecar
from gantk.nn.mlp import mlp_generator


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_builds_its_default_generator(family):
    f = FAMILIES[family]
    net = f.generator.build(**f.default_arch(f.generators[0]))
    assert sum(p.numel() for p in net.parameters()) > 0
    assert f.config_class.model_name() == family and f.model_class.Config is f.config_class


def test_train_help_names_every_family(capsys):
    assert main(["train", "--model", "pix2pix", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: gantk train --model pix2pix [OPTIONS]")
    assert all(f"  {name} " in out for name in FAMILIES) and "--lambda_L1" in out
    assert main(["train", "--model", "mnist_gan", "--help"]) == 0
    assert "--netG" not in capsys.readouterr().out  # families get only the options they read


def test_sidecar_says_what_a_file_holds(tmp_path):
    """A 1-channel generator: its keys say nothing of input_nc, so without a sidecar the default (3) is tried
    and fails by shape; with the sidecar gantk writes beside every network, it loads as it was saved."""
    torch.manual_seed(0)
    ref = define_G(1, 3, 8, "resnet_6blocks", norm="instance").eval()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatches: model.1.weight"):
        load_generator(path)
    write_sidecar(path, "cyclegan", "G_A", ref.arch)
    loaded = load(weights=path)
    assert loaded.arch == ref.arch and loaded.family.name == "cyclegan"
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.net(x), ref(x))


def test_training_writes_sidecars_and_architectures(sample_data, tmp_path):
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "t", max_iters=1)) == 0
    folder = tmp_path / "t"
    side = json.loads((folder / "latest_net_G_B.json").read_text())
    assert side["family"] == "cyclegan" and side["net"] == "G_B" and side["arch"]["ngf"] == 4
    assert not (folder / "latest_net_D_A.json").exists()  # discriminators are not run at inference
    state = torch.load(folder / "latest_state.pt", weights_only=True)
    assert set(state["arch"]) == {"G_A", "G_B"} and state["arch"]["G_A"]["netG"] == "resnet_6blocks"
    (folder / "train_opt.json").unlink()  # the sidecars alone are enough
    for direction, which in (("AtoB", "G_A"), ("BtoA", "G_B")):
        loaded = load("t", tmp_path, direction=direction, model="cyclegan")
        assert loaded.path.name == f"latest_net_{which}.pth" and loaded.arch == state["arch"][which]


def test_families_without_image_generator_are_refused(tmp_path, capsys):
    folder = tmp_path / "digits"
    folder.mkdir()
    (folder / "train_opt.json").write_text(json.dumps({"model": "mnist_gan", "latent_dim": 8, "hidden_dim": 16}))
    torch.save(mlp_generator(8, 16).state_dict(), folder / "latest_net_G.pth")
    assert load("digits", tmp_path).net[0].in_features == 8  # the loader reads it, from the saved options
    photo = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(photo)
    assert main(["translate", "--name", "digits", "--checkpoints_dir", str(tmp_path), "--input", str(photo)]) == 2
    assert "mnist_gan has no image-to-image inference" in capsys.readouterr().err
    assert main(["export", "--name", "digits", "--checkpoints_dir", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "mnist_gan networks are not exported" in capsys.readouterr().err
