"""Given reference-format or gantk files, load_generator restores the network or names what is wrong."""
import pytest
import torch

from gantk.checkpoints import atomic_save
from gantk.cli import main
from gantk.errors import CheckpointError
from gantk.models import define_G, load_generator


def reference_file(path, net, old_instance_stats=False, data_parallel=False):
    """Save like the reference code base: a plain state dict, optionally with its historical quirks."""
    sd = dict(net.state_dict())
    if old_instance_stats:  # checkpoints from torch < 0.4 carry InstanceNorm running stats
        for k in [k for k in sd if k.endswith(".weight") and sd[k].dim() == 4]:
            prefix = k[: -len("weight")]
            idx = prefix.rstrip(".").split(".")
            idx[-1] = str(int(idx[-1]) + 1)
            norm = ".".join(idx) + "."
            sd[norm + "running_mean"] = torch.zeros(sd[k].shape[0])
            sd[norm + "running_var"] = torch.ones(sd[k].shape[0])
    if data_parallel:
        sd = {"module." + k: v for k, v in sd.items()}
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("quirks", [{}, {"old_instance_stats": True}, {"data_parallel": True}])
def test_reference_file_loads_and_reproduces_outputs(tmp_path, quirks):
    torch.manual_seed(1)
    ref = define_G(3, 3, 8, "resnet_9blocks", norm="instance").eval()
    path = reference_file(tmp_path / "latest_net_G.pth", ref, **quirks)
    net = load_generator(path, netG="resnet_9blocks", ngf=8, norm="instance")
    assert not net.training
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_architecture_is_inferred_when_netG_is_none(tmp_path):
    ref = define_G(3, 3, 8, "unet_128", norm="batch").eval()
    net = load_generator(reference_file(tmp_path / "g.pth", ref), netG=None)
    assert net.arch["netG"] == "unet_128" and net.arch["norm"] == "batch" and net.arch["ngf"] == 8


def test_wrong_architecture_names_keys_and_suggests_options(tmp_path):
    path = reference_file(tmp_path / "g.pth", define_G(3, 3, 8, "resnet_6blocks", norm="instance"))
    with pytest.raises(CheckpointError) as e:
        load_generator(path, netG="resnet_9blocks", ngf=8, norm="instance")
    msg = str(e.value)
    assert "missing keys: model.16.conv_block.1.weight" in msg and "--netG resnet_6blocks" in msg
    assert "\n" not in msg
    with pytest.raises(CheckpointError, match=r"shape mismatches: model.1.weight \(8, 3, 7, 7\) vs \(16, 3, 7, 7\).*--ngf 8"):
        load_generator(path, netG="resnet_6blocks", ngf=16, norm="instance")


def test_corrupt_and_missing_files_give_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="broken.pth: not a readable PyTorch checkpoint"):
        load_generator(bad, netG="resnet_9blocks")
    with pytest.raises(CheckpointError, match="nothere.pth: checkpoint file not found"):
        load_generator(tmp_path / "nothere.pth", netG="resnet_9blocks")
    code = main(["translate", "--weights", str(bad), "--netG", "resnet_9blocks", "--input", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gantk: error: ") and err.count("\n") == 1


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = atomic_save({"a": torch.ones(2)}, tmp_path / "ckpt.pt")

    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "ckpt.pt.sha256"]  # no temp file left behind
