"""Given content/style images and a VGG19, gantk stylises them by optimisation (Gatys) or trains and runs
a feed-forward network (Johnson). A seeded random VGG19 (the `random` test switch) stands in for the
pretrained weights, so these tests check the mechanics, not the look."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import cli_flags
from gantk.cli import main
from gantk.io import load_image, pil_to_tensor
from gantk.models.style import load_transformer
from gantk.nn.transformer import TransformerNet
from gantk.nn.vgg import LAYERS, VGG19, VGG19_URL, content_loss, gram_matrix, load_vgg19, style_loss
from gantk.stylize import gatys


@pytest.fixture(scope="module")
def vgg():
    return load_vgg19("random")


def image(h, w, seed):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- Gram matrix and losses against hand-computed values ---

def test_gram_matrix_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    # F F^T = [[1+4, 3+8], [3+8, 9+16]], divided by C*H*W = 4
    torch.testing.assert_close(gram_matrix(f), torch.tensor([[[1.25, 2.75], [2.75, 6.25]]]))


def test_losses_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    assert float(content_loss(f, torch.zeros_like(f))) == pytest.approx((1 + 4 + 9 + 16) / 4)
    zero = {"a": torch.zeros(1, 2, 2), "b": torch.zeros(1, 2, 2)}
    one_layer = (1.25**2 + 2 * 2.75**2 + 6.25**2) / 4  # 13.9375
    assert float(style_loss({"a": f, "b": f}, zero)) == pytest.approx(2 * one_layer)  # summed over layers
    batch = f.expand(3, -1, -1, -1)  # a (1, C, C) target serves every image of a batch
    assert float(style_loss({"a": batch}, {"a": zero["a"]})) == pytest.approx(one_layer)


# --- VGG19: torchvision's layout, weights files, the missing-weights message ---

CONFIG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]  # torchvision vgg19.features


def torchvision_vgg19_shapes():
    """Key -> shape of torchvision's vgg19 `features`, written out from configuration 'E'."""
    widths = [v for v in CONFIG_E if v != "M"]
    shapes, c_in = {}, 3
    for i, c in zip(CONV_INDICES, widths):
        shapes[f"features.{i}.weight"], shapes[f"features.{i}.bias"] = (c, c_in, 3, 3), (c,)
        c_in = c
    return shapes


def test_vgg19_keys_and_layer_names_are_torchvision_s():
    sd = VGG19().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == torchvision_vgg19_shapes()
    assert list(sd)[-1] == "features.34.bias" and len(sd) == 32
    assert sum(v.numel() for v in sd.values()) == 20_024_384  # vgg19 minus its classifier
    assert [LAYERS[n] for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")] == [0, 5, 10, 19, 28]
    assert [LAYERS[n] for n in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")] == [1, 6, 11, 20, 22, 29]
    assert [LAYERS[n] for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "pool5")] == [3, 8, 15, 24, 36]


def test_relu_and_conv_taps_differ(vgg):
    """ReLUs are not in place: a conv tap is the pre-activation, the relu tap its positive part."""
    x = vgg.normalize(image(16, 16, 0))
    f = vgg(x, ["conv1_1", "relu1_1"])
    assert (f["conv1_1"] < 0).any()
    torch.testing.assert_close(f["relu1_1"], f["conv1_1"].clamp(min=0))


def test_full_torchvision_state_dict_loads_ignoring_classifier(vgg, tmp_path):
    sd = {**vgg.state_dict(), "classifier.0.weight": torch.zeros(2, 2), "classifier.6.bias": torch.zeros(2)}
    torch.save(sd, tmp_path / "vgg19-dcbb9e9d.pth")
    loaded = load_vgg19(str(tmp_path / "vgg19-dcbb9e9d.pth"))
    x = vgg.normalize(image(16, 16, 1))
    torch.testing.assert_close(loaded(x, ["relu2_1"])["relu2_1"], vgg(x, ["relu2_1"])["relu2_1"])
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def stylize_args(sample_data, tmp_path, *extra):
    photos = sample_data["unaligned"]
    return ["stylize", "--content", str(photos / "testA" / "000.png"), "--style", str(photos / "trainB" / "000.png"),
            "--out", str(tmp_path / "o.png"), *extra]


def test_without_weights_says_where_to_get_them(sample_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GANTK_VGG19", raising=False)
    assert main(stylize_args(sample_data, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and VGG19_URL in err and "--vgg-weights" in err and "GANTK_VGG19" in err
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    assert main(stylize_args(sample_data, tmp_path, "--vgg-weights", str(tmp_path / "wrong.pth"))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wrong.pth does not fit" in err and "missing keys" in err


# --- Gatys optimisation ---

@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_optimisation_lowers_style_plus_content_loss(vgg, optimizer):
    """Content and style of different sizes and aspect ratios (the Gram normalisation compares them)."""
    content, style = image(32, 40, 2), image(48, 36, 3)
    out, history = gatys(content, style, vgg, steps=12, optimizer=optimizer)
    assert out.shape == content.shape and out.abs().max() <= 1
    assert len(history) == 12 and history[-1] < 0.9 * history[0]


def test_stylize_command_writes_image_and_intermediates(sample_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANTK_VGG19", "random")  # the test switch, through the environment
    assert main(stylize_args(sample_data, tmp_path, "--steps", "4", "--save-every", "2", "--size", "24", "--amp")) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["o.png", "o_step00002.png"]
    assert Image.open(tmp_path / "o.png").size == (24, 24)  # 32 px photo, longer side capped


@pytest.mark.parametrize("extra,message", [
    (["--model", "x.pth"], "not both"),
    (["--out", "o.txt"], "give an image file name"),
    (["--steps", "0"], "--steps must be positive"),
    (["--style-layers", "relu9_1"], "'relu9_1': not a VGG19 layer"),
    (["--size", "8"], "these VGG19 layers need at least 16 px"),
    (["--content", "missing.png"], "missing.png: image file not found"),
])
def test_bad_stylize_input_is_one_line(sample_data, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("GANTK_VGG19", "random")
    assert main(stylize_args(sample_data, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


# --- the feed-forward network ---

EXAMPLE_KEYS = (["conv1.conv2d", "in1", "conv2.conv2d", "in2", "conv3.conv2d", "in3"]
                + [f"res{i}.{m}" for i in range(1, 6) for m in ("conv1.conv2d", "in1", "conv2.conv2d", "in2")]
                + ["deconv1.conv2d", "in4", "deconv2.conv2d", "in5", "deconv3.conv2d"])


def example_forward(net, x255):
    """pytorch/examples' TransformerNet.forward on 0..255 pixels, written out (2x nearest upsampling)."""
    def up_conv(layer, y):
        return layer.conv2d(layer.reflection_pad(F.interpolate(y, scale_factor=2, mode="nearest")))
    y = F.relu(net.in1(net.conv1(x255)))
    y = F.relu(net.in2(net.conv2(y)))
    y = F.relu(net.in3(net.conv3(y)))
    for block in (net.res1, net.res2, net.res3, net.res4, net.res5):
        y = block(y)
    y = F.relu(net.in4(up_conv(net.deconv1, y)))
    y = F.relu(net.in5(up_conv(net.deconv2, y)))
    return net.deconv3(y)


def test_example_checkpoints_load_and_mean_the_same(tmp_path):
    """Keys are the example's; its old InstanceNorm running stats are dropped; [-1, 1] in/out = 0..255 inside."""
    torch.manual_seed(0)
    net = TransformerNet()
    sd = net.state_dict()
    assert sorted(sd) == sorted(f"{k}.{p}" for k in EXAMPLE_KEYS for p in ("weight", "bias"))
    old = dict(sd)
    for k in EXAMPLE_KEYS:
        if k.split(".")[-1].startswith("in"):
            old[f"{k}.running_mean"], old[f"{k}.running_var"] = torch.zeros(3), torch.ones(3)
    torch.save(old, tmp_path / "mosaic.pth")
    loaded = load_transformer(tmp_path / "mosaic.pth")
    assert not loaded.training
    x = image(32, 44, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), example_forward(net, (x + 1) * 127.5) / 127.5 - 1)


def fast_args(sample_data, tmp_path, name="fs", **extra):
    photos = sample_data["unaligned"]
    args = ["train", "--model", "fast_style", "--dataroot", str(photos / "trainA"), "--style",
            str(photos / "trainB" / "000.png"), "--vgg_weights", "random", "--checkpoints_dir", str(tmp_path),
            "--name", name, "--image_size", "32", "--batch_size", "2", "--max_dataset_size", "4",
            "--num_threads", "0", "--print_freq", "1", "--display_freq", "4"]
    return args + cli_flags(**extra)


def test_fast_style_trains_resumes_exactly_and_keeps_odd_sizes(sample_data, tmp_path):
    """4 iterations straight == 2 + resume + 2 (across an epoch end); the result stylises a 33x47 image."""
    assert main(fast_args(sample_data, tmp_path, "straight", max_iters=4)) == 0
    assert main(fast_args(sample_data, tmp_path, "resumed", max_iters=2)) == 0
    assert main(fast_args(sample_data, tmp_path, "resumed", max_iters=4, continue_train=True)) == 0
    a = torch.load(tmp_path / "straight" / "latest_net_G.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "latest_net_G.pth", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    log = (tmp_path / "straight" / "loss_log.txt").read_text()
    assert "content:" in log and "style:" in log
    assert list((tmp_path / "straight" / "web" / "images").glob("*.png"))
    net = load_transformer(tmp_path / "straight" / "latest_state.pt")
    with torch.no_grad():
        assert net(image(33, 47, 5)).shape == (1, 3, 33, 47)
    Image.new("RGB", (47, 33), (200, 120, 40)).save(tmp_path / "odd.png")
    out = tmp_path / "odd_out.png"
    assert main(["stylize", "--model", str(tmp_path / "straight" / "latest_net_G.pth"), "--content",
                 str(tmp_path / "odd.png"), "--out", str(out)]) == 0
    assert Image.open(out).size == (47, 33)
    # `gantk translate --name` reaches a fast_style experiment through the one loader (family and architecture
    # from the experiment's records) and draws what the network draws
    photo, res = sample_data["unaligned"] / "testA" / "000.png", tmp_path / "translated"
    assert main(["translate", "--name", "straight", "--checkpoints_dir", str(tmp_path), "--input", str(photo),
                 "--output", str(res)]) == 0
    assert json.loads((res / "translate.json").read_text())["model"] == "fast_style"
    with torch.no_grad():
        want = ((net(pil_to_tensor(load_image(photo))[None])[0].clamp(-1, 1) + 1) * 127.5).round()
    got = torch.from_numpy(np.asarray(Image.open(res / "images" / "000_fake.png")).copy()).permute(2, 0, 1).float()
    assert (got - want).abs().max() <= 1


@pytest.mark.parametrize("extra,message", [
    ({"style": ""}, "--style is required"),
    ({"style": "nowhere.jpg"}, "--style nowhere.jpg: no such file"),
    ({"vgg_weights": ""}, "VGG19 weights needed"),
    ({"style_layers": "relu1_2,fc7"}, "--style_layers 'fc7': not a VGG19 layer"),
    ({"image_size": 4}, "--image_size 4: these VGG19 layers need at least 8 px"),
])
def test_bad_fast_style_options_fail_before_work(sample_data, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("GANTK_VGG19", raising=False)
    assert main(fast_args(sample_data, tmp_path, **extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "fs").exists()


def test_stylize_with_a_network_of_another_family_is_one_line(tmp_path, capsys):
    torch.save({"format": "gantk-train-v1", "nets": {"G_A": {}, "G_B": {}}}, tmp_path / "cyclegan.pt")
    Image.new("RGB", (20, 20)).save(tmp_path / "c.png")
    assert main(["stylize", "--model", str(tmp_path / "cyclegan.pt"), "--content", str(tmp_path / "c.png"),
                 "--out", str(tmp_path / "o.png")]) == 2
    assert "has no network 'G'; it holds G_A, G_B" in capsys.readouterr().err
