"""Given aligned A|B pairs, `gantk train --model pix2pix` runs the reference recipe (U-Net + batch norm +
dropout, conditional PatchGAN, vanilla GAN + L1 x100), resumes exactly, and translates with BatchNorm
batch statistics (the reference test script) or running statistics (--eval)."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from conftest import tiny_args
from gantk.cli import main
from gantk.models import define_D, define_G, load_generator, prepare_for_inference
from gantk.models.pix2pix import Pix2PixConfig, Pix2PixModel
from test_train import assert_same_weights, nets

NETS = ("G", "D")


def p2p_args(dataroot, ckpt, name="p", **extra):
    """tiny_args turned into a pix2pix run (later options win): unet_128 on 128 px crops of the 32 px pairs."""
    pix2pix = dict(model="pix2pix", netG="unet_128", ngf=8, ndf=8, load_size=136, crop_size=128)
    return tiny_args(dataroot, ckpt, name, **{**pix2pix, **extra})


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def unet_batchnorm_params(num_downs, ngf, in_nc=3, out_nc=3):
    """Reference U-Net arithmetic with BatchNorm: 4x4 convs without bias (but the outermost up conv),
    a norm (weight + bias) after every down conv but the outer- and innermost, and after every up conv
    but the outermost."""
    levels = [(ngf * 8, ngf * 8)] * (num_downs - 4) + [(ngf * 4, ngf * 8), (ngf * 2, ngf * 4), (ngf, ngf * 2)]
    n = 0
    for i, (outer, inner) in enumerate(levels):  # innermost first
        n += outer * inner * 16 + (inner if i == 0 else 2 * inner) * outer * 16
        n += 2 * outer + (0 if i == 0 else 2 * inner)
    return n + in_nc * ngf * 16 + 2 * ngf * out_nc * 16 + out_nc


def patchgan_batchnorm_params(input_nc, ndf=64):
    """70x70 PatchGAN: conv(in, ndf) + bias, three convs doubling the width (to 8 ndf) each with BatchNorm,
    conv(., 1) + bias."""
    widths = [ndf, ndf * 2, ndf * 4, ndf * 8]
    n = input_nc * ndf * 16 + ndf
    n += sum(a * b * 16 + 2 * b for a, b in zip(widths, widths[1:]))
    return n + widths[-1] * 16 + 1


@pytest.mark.parametrize("netG,num_downs,keys,params", [("unet_256", 8, 82, 54_413_955),
                                                         ("unet_128", 7, 70, 41_828_995)])
def test_unet_layouts(netG, num_downs, keys, params):
    """Each middle level: conv w, BN (5 entries), up conv w, BN (5); innermost 7; outermost 3 (up conv bias)."""
    net = define_G(3, 3, 64, netG, norm="batch", use_dropout=True)
    sd = net.state_dict()
    assert len(sd) == keys == 3 + 7 + 12 * (num_downs - 2)
    assert n_params(net) == params == unet_batchnorm_params(num_downs, 64)
    assert "model.model.3.bias" in sd and "model.model.0.bias" not in sd
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == num_downs - 5  # deep levels below the innermost


def test_conditional_patchgan_layout():
    d = define_D(6, 64, "basic", norm="batch")  # D sees cat(A, B)
    assert n_params(d) == 2_768_705 == patchgan_batchnorm_params(6)
    assert d.model[0].weight.shape == (64, 6, 4, 4)
    assert len(d.state_dict()) == 2 + 3 * 6 + 2  # first conv w+b, 3x (conv w, BN 5), last conv w+b


def test_reference_defaults():
    c = Pix2PixConfig()
    assert (c.netG, c.norm, c.dataset_mode, c.gan_mode, c.pool_size, c.lambda_L1, c.use_dropout) == \
        ("unet_256", "batch", "aligned", "vanilla", 0, 100.0, True)
    assert (c.netD, c.n_layers_D, c.lr, c.beta1, c.init_type, c.load_size, c.crop_size, c.batch_size) == \
        ("basic", 3, 0.0002, 0.5, "normal", 286, 256, 1)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_loads(tmp_path, prefix):
    """A reference-layout unet state dict (optionally DataParallel-prefixed) loads with or without dropout,
    which changes no keys; the loaded net reproduces the original's eval-mode output."""
    torch.manual_seed(0)
    ref = define_G(3, 3, 8, "unet_128", norm="batch", use_dropout=True)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "latest_net_G.pth"
    torch.save({prefix + k: v for k, v in ref.state_dict().items()}, path)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        want = ref.eval()(x)
        for dropout in (True, False):
            g = load_generator(path, netG="unet_128", ngf=8, norm="batch", use_dropout=dropout)
            assert any(isinstance(m, nn.Dropout) for m in g.modules()) == dropout
            torch.testing.assert_close(g(x), want, rtol=0, atol=0)
        assert load_generator(path).arch["netG"] == "unet_128"  # inferred from the keys


def test_train_resume_is_exact(sample_data, tmp_path):
    """6 iterations straight == 3 + --continue_train + 3 (two epoch ends, LR decay, a full image pool);
    losses are finite and every network moved away from its initialisation."""
    root, extra = sample_data["aligned"], dict(pool_size=2, display_freq=100)
    assert main(p2p_args(root, tmp_path, "straight", max_iters=6, **extra)) == 0
    assert main(p2p_args(root, tmp_path, "resumed", max_iters=3, **extra)) == 0
    assert main(p2p_args(root, tmp_path, "resumed", max_iters=6, continue_train=True, **extra)) == 0
    straight = nets(tmp_path / "straight", NETS)
    assert_same_weights(straight, nets(tmp_path / "resumed", NETS))
    rows = [json.loads(line) for line in (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) >= {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert all(torch.isfinite(torch.tensor(r[k])) for r in rows for k in ("G_GAN", "G_L1", "D_real", "D_fake"))
    torch.manual_seed(0)
    init = Pix2PixModel(Pix2PixConfig(netG="unet_128", ngf=8, ndf=8, crop_size=128))
    for name in NETS:
        assert any(not torch.equal(v, straight[name][k]) for k, v in init.nets[name].state_dict().items()
                   if v.is_floating_point()), name


def test_amp_and_channels_last_train(sample_data, tmp_path):
    assert main(p2p_args(sample_data["aligned"], tmp_path, max_iters=2, amp=True, channels_last=True)) == 0
    rows = [json.loads(line) for line in (tmp_path / "p" / "losses.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["G_L1"])) for r in rows)


def fold_eval(net):
    """Independent eval-mode truth: every BatchNorm as y = (x - running_mean) / sqrt(running_var + eps) * w + b."""
    class Affine(nn.Module):
        def __init__(self, bn):
            super().__init__()
            self.scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()[None, :, None, None]
            self.shift = (bn.bias - bn.running_mean * self.scale.flatten()).detach()[None, :, None, None]

        def forward(self, x):
            return x * self.scale + self.shift
    return swap_bn(net, Affine).eval()


def per_image_norm(net):
    """Independent batch-statistics truth at batch size 1: InstanceNorm with BatchNorm's affine parameters."""
    def make(bn):
        m = nn.InstanceNorm2d(bn.num_features, eps=bn.eps, affine=True)
        m.load_state_dict({"weight": bn.weight, "bias": bn.bias})
        return m
    return swap_bn(net, make).train()  # train(): dropout stays on, as in the reference test script


def swap_bn(net, make):
    net = copy.deepcopy(net)
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            parent, _, key = name.rpartition(".")
            setattr(net.get_submodule(parent), key, make(m))
    return net


def test_eval_and_batch_statistics_differ_and_each_is_right():
    torch.manual_seed(0)
    net = define_G(3, 3, 8, "unet_128", norm="batch", use_dropout=True)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        batch_truth, eval_truth = [], fold_eval(net)(x)
        for _ in range(2):  # dropout active: same seed, same masks
            torch.manual_seed(5)
            batch_truth.append(per_image_norm(net)(x))
        prepare_for_inference(net, eval_mode=False)
        assert net.inference == {"eval": False, "bn_mode": "batch", "dropout": True}
        torch.manual_seed(5)
        batch = net(x)
        torch.manual_seed(6)
        other_masks = net(x)
        prepare_for_inference(net, eval_mode=True)
        assert net.inference == {"eval": True, "bn_mode": "eval", "dropout": False}
        evaluated = net(x)
    torch.testing.assert_close(batch, batch_truth[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(evaluated, eval_truth, rtol=1e-4, atol=1e-5)
    assert (batch - evaluated).abs().mean() > 0.01 and not torch.equal(batch, other_masks)
    for k, v in net.state_dict().items():  # batch statistics never touched the running statistics
        assert torch.equal(v, buffers[k]), k


@pytest.fixture(scope="module")
def trained(sample_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("p2p")
    assert main(p2p_args(sample_data["aligned"], ckpt, "p", max_iters=3)) == 0
    return ckpt


def translate(trained, sample_data, out, *flags):
    args = ["translate", "--name", "p", "--checkpoints_dir", str(trained), "--dataroot", str(sample_data["aligned"]),
            "--output", str(out), "--num_test", "2"]
    assert main(args + list(flags)) == 0
    return translated(out)


def translated(out):
    """({file name: pixels} of out/images, translate.json) of a finished translate run."""
    return {p.name: pixels(p) for p in (out / "images").glob("*.png")}, json.loads((out / "translate.json").read_text())


def pixels(path):
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img).copy())


def test_translate_aligned_test_set_with_either_statistics(trained, sample_data, tmp_path):
    """Default = the reference test script (batch statistics, dropout on, reproducible by --seed);
    --eval = running statistics; the choice is recorded in translate.json and the page title."""
    default, rec = translate(trained, sample_data, tmp_path / "d")
    again, _ = translate(trained, sample_data, tmp_path / "a", "--no-eval", "--seed", "0")
    evaluated, rec_eval = translate(trained, sample_data, tmp_path / "e", "--eval")
    assert sorted(default) == ["000_fake.png", "000_real.png", "000_target.png", "001_fake.png", "001_real.png",
                               "001_target.png"]
    assert default["000_fake.png"].shape == (128, 128, 3)  # 32 px pairs, resized to the unet_128 multiple
    assert (rec["model"], rec["bn_mode"], rec["dropout"], rec_eval["bn_mode"]) == ("pix2pix", "batch", True, "eval")
    assert all(torch.equal(default[k], again[k]) for k in default)
    assert not torch.equal(default["000_fake.png"], evaluated["000_fake.png"])
    assert torch.equal(default["000_real.png"], evaluated["000_real.png"])
    assert "BatchNorm batch statistics, dropout on" in (tmp_path / "d" / "index.html").read_text()


def test_translate_tiles_need_running_statistics(trained, sample_data, tmp_path, capsys):
    assert main(["translate", "--name", "p", "--checkpoints_dir", str(trained), "--dataroot",
                 str(sample_data["aligned"]), "--output", str(tmp_path), "--tile", "128"]) == 2
    assert "--tile needs BatchNorm running statistics: add --eval" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    ({"netG": "unet_256"}, "--netG unet_256 needs --crop_size divisible by 256, got 128"),
    ({"preprocess": "none"}, "--netG unet_128 needs fixed-size inputs divisible by 128"),
])
def test_bad_options_are_one_line(sample_data, tmp_path, capsys, extra, message):
    assert main(p2p_args(sample_data["aligned"], tmp_path, **extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
