"""Given aligned A|B pairs, `gantk train --model bicyclegan` runs the reference recipe (cVAE-GAN + cLR-GAN),
resumes exactly, loads official G/E files, and `gantk translate` samples several outputs per input."""
import json

import pytest
import torch
import torch.nn as nn

from conftest import tiny_args
from gantk.cli import main
from gantk.errors import CheckpointError
from gantk.models.bicyclegan import (BicycleGANConfig, BicycleGANModel, define_bicycle_D, define_bicycle_E,
                                     define_bicycle_G, diversity, encode, load_E, load_G)
from gantk.translate import translate_bicycle
from test_pix2pix import n_params, translated
from test_train import assert_same_weights, nets

NETS = ("G", "E", "D", "D2")
SMALL = dict(netG="unet_128", netE="resnet_128", netD="basic_128_multi", netD2="basic_128_multi")


def bicycle_args(dataroot, ckpt, name="b", **extra):
    """tiny_args turned into a BicycleGAN run (later options win): 128 px crops of the 32 px pairs, width 8."""
    bicycle = dict(model="bicyclegan", ngf=8, ndf=8, nef=8, load_size=136, crop_size=128, **SMALL)
    return tiny_args(dataroot, ckpt, name, **{**bicycle, **extra})


# --- layouts: parameter counts from the reference architecture's arithmetic ---
def unet_z_params(num_downs, ngf, nz, in_nc, out_nc, where_add):
    """Instance norm (no parameters), every conv with a bias, 4x4 kernels. Levels (input, outer, inner)
    innermost first; z adds nz input channels to every down conv ('all') or to the first ('input')."""
    levels = [(ngf * 8, ngf * 8, ngf * 8)] * (num_downs - 4)
    levels += [(ngf * 4, ngf * 4, ngf * 8), (ngf * 2, ngf * 2, ngf * 4), (ngf, ngf, ngf * 2), (in_nc, out_nc, ngf)]
    n = 0
    for i, (inp, outer, inner) in enumerate(levels):
        z = nz if where_add == "all" or i == len(levels) - 1 else 0
        n += (inp + z) * inner * 16 + inner  # down conv
        n += (inner if i == 0 else 2 * inner) * outer * 16 + outer  # up conv (the skip doubles its input)
    return n


def resnet_encoder_params(in_nc, nef, nz, n_blocks):
    """conv4x4(in, nef); BasicBlocks a -> b: conv3(a, a), conv3(a, b), shortcut conv1(a, b); fc and fcVar."""
    widths = [nef * min(4, n) for n in range(1, n_blocks + 1)]
    n = in_nc * nef * 16 + nef
    n += sum(9 * a * a + a + 9 * a * b + b + a * b + b for a, b in zip(widths, widths[1:]))
    return n + 2 * (widths[-1] * nz + nz)


def multi_patchgan_params(in_nc, ndf, n_layers, num_D):
    """num_D PatchGANs of ndf / 2**i filters: n_layers + 1 biased 4x4 convs widening x2 up to 8 ndf, then one to 1."""
    n = 0
    for i in range(num_D):
        f = round(ndf / 2**i)
        widths = [in_nc] + [f * min(2**k, 8) for k in range(n_layers + 1)]
        n += sum(a * b * 16 + b for a, b in zip(widths, widths[1:])) + widths[-1] * 16 + 1
    return n


@pytest.mark.parametrize("netG,where_add,params", [
    ("unet_256", "all", 54_794_627), ("unet_256", "input", 54_417_795), ("unet_128", "all", 42_145_155)])
def test_generator_layouts(netG, where_add, params):
    g = define_bicycle_G(3, 3, 8, 64, netG, where_add=where_add)
    downs = 8 if netG == "unet_256" else 7
    assert n_params(g) == params == unet_z_params(downs, 64, 8, 3, 3, where_add)
    sd = g.state_dict()
    assert len(sd) == 4 * downs  # down and up conv per level, weight and bias (instance norm: no entries)
    if where_add == "all":
        deepest = "model." + "submodule." * (downs - 1)
        assert {"model.down.0.weight", "model.up.1.weight", "model.submodule.down.1.weight",
                "model.submodule.up.1.bias", deepest + "down.1.weight", deepest + "up.1.weight"} <= set(sd)
        assert sd["model.submodule.down.1.weight"].shape == (128, 64 + 8, 4, 4)  # z enters every level
    else:
        assert {"model.model.0.weight", "model.model.3.weight", "model.model.1.model.1.weight"} <= set(sd)
        assert sd["model.model.0.weight"].shape == (64, 3 + 8, 4, 4)
    x, z = torch.randn(1, 3, 2**downs, 2**downs), torch.randn(1, 8)
    with torch.no_grad():
        assert g(x, z).shape == x.shape


def test_generator_variants_change_keys():
    bilinear = define_bicycle_G(3, 3, 8, 8, "unet_128", upsample="bilinear").state_dict()
    assert "model.up.3.weight" in bilinear and "model.up.1.weight" not in bilinear  # Upsample, pad, conv
    batch = define_bicycle_G(3, 3, 8, 8, "unet_128", norm="batch").state_dict()
    assert "model.submodule.down.2.running_mean" in batch and "model.submodule.down.1.bias" in batch  # biases kept
    dropout = define_bicycle_G(3, 3, 8, 8, "unet_128", use_dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in dropout.modules()) == 2  # deep levels below the innermost
    assert set(dropout.state_dict()) == set(define_bicycle_G(3, 3, 8, 8, "unet_128").state_dict())


@pytest.mark.parametrize("netE,n_blocks,params", [("resnet_256", 5, 2_590_032), ("resnet_128", 4, 1_344_080)])
def test_encoder_layouts(netE, n_blocks, params):
    e = define_bicycle_E(3, 8, 64, netE)
    assert n_params(e) == params == resnet_encoder_params(3, 64, 8, n_blocks)
    keys = list(e.state_dict())
    assert keys[:4] == ["fc.0.weight", "fc.0.bias", "fcVar.0.weight", "fcVar.0.bias"]  # the reference's order
    assert len(keys) == 4 + 2 + 6 * (n_blocks - 1)
    assert {"conv.0.weight", "conv.1.conv.2.weight", "conv.1.conv.5.0.weight", "conv.1.shortcut.1.weight"} <= set(keys)
    size = int(netE.split("_")[1])
    with torch.no_grad():
        mu, logvar = e(torch.randn(2, 3, size, size))
    assert mu.shape == logvar.shape == (2, 8)
    assert define_bicycle_E(3, 8, 8, "conv_128")(torch.randn(1, 3, 128, 128))[0].shape == (1, 8)


def test_multiscale_discriminator_layout():
    d = define_bicycle_D(3, 64, "basic_256_multi", num_Ds=2)
    assert n_params(d) == 3_458_978 == multi_patchgan_params(3, 64, 3, 2)
    sd = d.state_dict()
    assert len(sd) == 20 and {k.split(".")[0] for k in sd} == {"model_0", "model_1"}
    assert sd["model_1.0.weight"].shape == (32, 3, 4, 4) and "model_0.2.bias" in sd  # biases before the norms too
    with torch.no_grad():
        maps = d(torch.randn(1, 3, 256, 256))
    assert [m.shape[-1] for m in maps] == [30, 14]  # the second scale sees the image at half size
    assert list(define_bicycle_D(3, 8, "basic_128_multi", num_Ds=1).state_dict())[0] == "model.0.weight"


def test_reference_defaults():
    c = BicycleGANConfig()
    assert (c.nz, c.batch_size, c.netG, c.netE, c.netD, c.netD2, c.num_Ds, c.norm, c.nl, c.upsample, c.where_add) == \
        (8, 2, "unet_256", "resnet_256", "basic_256_multi", "basic_256_multi", 2, "instance", "relu", "basic", "all")
    assert (c.lambda_L1, c.lambda_z, c.lambda_kl, c.lambda_GAN, c.lambda_GAN2, c.gan_mode, c.lr, c.beta1) == \
        (10.0, 0.5, 0.01, 1.0, 1.0, "lsgan", 0.0002, 0.5)
    assert (c.use_dropout, c.use_same_D, c.conditional_D, c.init_type, c.dataset_mode) == \
        (False, False, False, "xavier", "aligned")


# --- official checkpoints ---
@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoints_load(tmp_path, prefix):
    """Reference-layout G and E state dicts (DataParallel prefix or not) load with explicit options or with
    none (read off the shapes), and reproduce the originals' outputs."""
    torch.manual_seed(0)
    g, e = define_bicycle_G(1, 3, 8, 8, "unet_128"), define_bicycle_E(3, 8, 8, "resnet_128")
    torch.save({prefix + k: v for k, v in g.state_dict().items()}, tmp_path / "latest_net_G.pth")
    torch.save({prefix + k: v for k, v in e.state_dict().items()}, tmp_path / "latest_net_E.pth")
    x, b, z = torch.randn(1, 1, 128, 128), torch.randn(1, 3, 128, 128), torch.randn(1, 8)
    with torch.no_grad():
        for G in (load_G(tmp_path / "latest_net_G.pth", input_nc=1, ngf=8, netG="unet_128"),
                  load_G(tmp_path / "latest_net_G.pth")):
            assert torch.equal(G(x, z), g(x, z)) and not G.training
        for E in (load_E(tmp_path / "latest_net_E.pth", nef=8, netE="resnet_128"),
                  load_E(tmp_path / "latest_net_E.pth")):
            assert all(torch.equal(p, q) for p, q in zip(E(b), e(b)))
    with pytest.raises(CheckpointError, match="does not fit this architecture.*the file looks like --where_add all"):
        load_G(tmp_path / "latest_net_G.pth", ngf=16)


def test_encode_resizes_to_the_encoder_size():
    e = define_bicycle_E(3, 8, 8, "resnet_128").eval()
    b = torch.rand(1, 3, 256, 256) * 2 - 1
    small = nn.functional.interpolate(b, size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        assert torch.equal(encode(e, b), e(small)[0])


# --- training ---
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler")  # resumed epoch: only a skipped step
def test_train_resume_is_exact(sample_data, tmp_path):
    """4 iterations straight == 2 + --continue_train + 2 (batch 2 split in halves; 5 pairs, so every epoch
    ends with a skipped single pair, here the first step after the resume); losses are finite and
    G, E, D, D2 all moved."""
    root, extra = sample_data["aligned"], dict(batch_size=2, max_dataset_size=5, display_freq=100)
    assert main(bicycle_args(root, tmp_path, "straight", max_iters=4, **extra)) == 0
    assert main(bicycle_args(root, tmp_path, "resumed", max_iters=2, **extra)) == 0
    assert main(bicycle_args(root, tmp_path, "resumed", max_iters=4, continue_train=True, **extra)) == 0
    straight = nets(tmp_path / "straight", NETS)
    assert_same_weights(straight, nets(tmp_path / "resumed", NETS))
    rows = [json.loads(line) for line in (tmp_path / "straight" / "losses.jsonl").read_text().splitlines()]
    losses = ("G_GAN", "D", "G_GAN2", "D2", "G_L1", "z_L1", "kl")
    trained = [r for r in rows if "G_L1" in r]
    assert len(rows) == 4 and len(trained) == 3  # iteration 3 was the skipped single pair
    assert all(torch.isfinite(torch.tensor(r[k])) for r in trained for k in losses)
    torch.manual_seed(0)
    init = BicycleGANModel(BicycleGANConfig(ngf=8, ndf=8, nef=8, crop_size=128, **SMALL))
    for name in NETS:
        assert any(not torch.equal(v, straight[name][k]) for k, v in init.nets[name].state_dict().items()), name


def test_amp_and_channels_last_train(sample_data, tmp_path):
    assert main(bicycle_args(sample_data["aligned"], tmp_path, max_iters=1, amp=True, channels_last=True)) == 0
    row = json.loads((tmp_path / "b" / "losses.jsonl").read_text().splitlines()[0])
    assert all(torch.isfinite(torch.tensor(row[k])) for k in ("G_L1", "z_L1", "kl", "D", "D2"))


@pytest.mark.parametrize("extra,message", [
    ({"batch_size": 3}, "--batch_size must be even for BicycleGAN (two halves), got 3"),
    ({"netE": "resnet_256"}, "--netE resnet_256 takes 256 px images: use --crop_size 256 with a crop preprocess"),
    ({"netG": "unet_256"}, "--netG unet_256 needs --crop_size divisible by 256, got 128"),
])
def test_bad_options_are_one_line(sample_data, tmp_path, capsys, extra, message):
    assert main(bicycle_args(sample_data["aligned"], tmp_path, **extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --- sampling ---
@pytest.fixture(scope="module")
def trained(sample_data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("bicycle")
    assert main(bicycle_args(sample_data["aligned"], ckpt, "b", max_iters=2)) == 0
    return ckpt


def sample(trained, sample_data, out, *flags):
    args = ["translate", "--name", "b", "--checkpoints_dir", str(trained), "--dataroot", str(sample_data["aligned"]),
            "--output", str(out), "--num_test", "2", "--n_samples", "3"]
    assert main(args + list(flags)) == 0
    return translated(out)


def test_translate_samples_encoded_and_random_outputs(trained, sample_data, tmp_path, capsys):
    """Per input: input, ground truth, encoded, 3 random samples and a grid; random z differ from each
    other; the same --seed repeats them exactly, another seed does not; diversity is printed and logged."""
    first, rec = sample(trained, sample_data, tmp_path / "s1", "--seed", "1")
    again, _ = sample(trained, sample_data, tmp_path / "s1b", "--seed", "1")
    other, _ = sample(trained, sample_data, tmp_path / "s2", "--seed", "2")
    assert sorted(k for k in first if k.startswith("000_")) == [
        "000_encoded.png", "000_grid.png", "000_ground_truth.png", "000_input.png",
        "000_random_sample01.png", "000_random_sample02.png", "000_random_sample03.png"]
    assert first["000_grid.png"].shape == (128, 6 * 128 + 5 * 2, 3)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["000_random_sample01.png"], other["000_random_sample01.png"])
    assert not torch.equal(first["000_random_sample01.png"], first["000_random_sample02.png"])
    assert torch.equal(first["000_encoded.png"], other["000_encoded.png"])  # mu of the ground truth: no randomness
    d = rec["diversity"]
    assert set(d["per_image"]) == {"000.png", "001.png"} and d["mean"] > 0
    assert (rec["model"], rec["eval"], rec["encoder"], rec["n_samples"]) == ("bicyclegan", True, True, 3)
    assert f"{d['mean']:.4f}" in capsys.readouterr().out
    page = (tmp_path / "s1" / "index.html").read_text()
    assert f"diversity (mean pairwise L1 of the random samples) {d['mean']:.4f}" in page


class RecordingG(nn.Module):
    """A stand-in generator that records the z it is given and returns its input."""
    arch = {"nz": 8}

    def __init__(self):
        super().__init__()
        self.z = []

    def forward(self, x, z):
        self.z.append(z.clone())
        return x.expand(len(z), -1, -1, -1)


@pytest.mark.parametrize("sync", [True, False])
def test_sync_uses_one_z_list_for_all_inputs(tmp_path, sync):
    g = RecordingG()
    items = [(f"{i}.png", torch.zeros(3, 8, 8), None) for i in range(3)]
    scores, _ = translate_bicycle(g, None, items, tmp_path, n_samples=4, sync=sync, seed=0)
    assert len(g.z) == 3 and all(z.shape == (4, 8) for z in g.z)
    assert all(torch.equal(z, g.z[0]) for z in g.z) == sync
    assert scores == {"0.png": 0.0, "1.png": 0.0, "2.png": 0.0}  # identical outputs: total mode collapse


def test_diversity_is_mean_pairwise_l1():
    a, b, c = torch.zeros(3, 4, 4), torch.ones(3, 4, 4), -torch.ones(3, 4, 4)
    assert diversity([a, b, c]) == pytest.approx((1 + 1 + 2) / 3)
    assert diversity([a]) == 0.0
