"""Given the reference factory names, gantk builds modules with the reference state-dict layouts."""
import pytest
import torch

from gantk.checkpoints import describe_generator
from gantk.models import define_D, define_G


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("netG,norm,keys,params", [
    ("resnet_9blocks", "instance", 48, 11_378_179),
    ("resnet_6blocks", "instance", 36, 7_837_699),
    ("unet_256", "batch", 82, 54_413_955),
])
def test_generator_layouts_match_reference(netG, norm, keys, params):
    net = define_G(3, 3, 64, netG, norm=norm)
    assert len(net.state_dict()) == keys
    assert n_params(net) == params


def test_resnet_key_indices():
    sd = define_G(3, 3, 64, "resnet_9blocks", norm="instance").state_dict()
    for i in (1, 4, 7, 19, 22, 26):
        assert f"model.{i}.weight" in sd and f"model.{i}.bias" in sd
    for b in range(10, 19):
        assert f"model.{b}.conv_block.1.weight" in sd and f"model.{b}.conv_block.5.weight" in sd
    assert sd["model.22.weight"].shape == (128, 64, 3, 3)  # ConvTranspose2d(128 -> 64)
    with_dropout = define_G(3, 3, 64, "resnet_9blocks", norm="instance", use_dropout=True).state_dict()
    assert "model.10.conv_block.6.weight" in with_dropout and "model.10.conv_block.5.weight" not in with_dropout


def test_bias_only_with_instance_norm():
    batch = define_G(3, 3, 8, "resnet_6blocks", norm="batch").state_dict()
    assert "model.1.bias" not in batch and "model.2.running_mean" in batch
    assert "model.23.bias" in batch  # the last conv (index 23 with 6 blocks) always has a bias
    none = define_G(3, 3, 8, "resnet_6blocks", norm="none").state_dict()
    assert "model.1.bias" not in none


def test_unet_keys_and_forward_shape():
    net = define_G(3, 3, 8, "unet_128", norm="batch")
    sd = net.state_dict()
    assert "model.model.0.weight" in sd and "model.model.1.model.1.weight" in sd
    assert "model.model.3.weight" in sd  # outermost up-conv
    assert net(torch.randn(1, 3, 128, 128)).shape == (1, 3, 128, 128)


def test_patchgan_layout():
    d = define_D(3, 64, "basic", norm="instance")
    assert n_params(d) == 2_764_737
    assert {k.split(".")[1] for k in d.state_dict()} == {"0", "2", "5", "8", "11"}
    assert d(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)  # 70x70 receptive field patches
    pixel = define_D(3, 64, "pixel", norm="batch").state_dict()
    assert {"net.0.weight", "net.2.weight", "net.3.running_mean", "net.5.weight"} <= set(pixel)
    deep = define_D(3, 8, "n_layers", n_layers_D=5, norm="batch")
    assert deep(torch.randn(1, 3, 256, 256)).shape[-1] == 6


def test_init_normal_002():
    torch.manual_seed(0)
    w = define_G(3, 3, 64, "resnet_9blocks", norm="instance").model[10].conv_block[1].weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert float(define_G(3, 3, 8, "resnet_6blocks", norm="instance").model[1].bias.detach().abs().max()) == 0


@pytest.mark.parametrize("netG,norm,dropout", [("resnet_9blocks", "instance", False), ("resnet_6blocks", "batch", True),
                                               ("unet_256", "batch", False), ("unet_128", "instance", False)])
def test_describe_generator_recovers_options(netG, norm, dropout):
    sd = define_G(3, 3, 16, netG, norm=norm, use_dropout=dropout).state_dict()
    guess = describe_generator(sd)
    assert (guess["netG"], guess["ngf"], guess["norm"]) == (netG, 16, norm)
