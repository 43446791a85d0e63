"""Released generators as .safetensors (`gantk export --format safetensors`): the weights bit for bit, the
family/architecture in the header metadata (read back with the safetensors library itself), loaded by gantk's
one loader so translate/export/bench take them, outputs identical to the .pth, and one-line refusals."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("safetensors", reason="safetensors is not installed (gantk[export])")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gantk.checkpoints import atomic_save  # noqa: E402
from gantk.cli import main  # noqa: E402
from gantk.errors import CheckpointError  # noqa: E402
from gantk.export import load_runner, spec_for_generator  # noqa: E402
from gantk.models.loading import load_file, write_safetensors, write_sidecar  # noqa: E402
from gantk.models.networks import define_G  # noqa: E402

UNET = dict(input_nc=3, output_nc=3, ngf=4, netG="unet_128", norm="batch", use_dropout=True)
CASES = {  # family, arch, --bn_mode, the mode the header records, parity sizes
    "cyclegan": ("cyclegan", dict(input_nc=3, output_nc=3, ngf=4, netG="resnet_6blocks", norm="instance"),
                 "batch", "none", (32, 64)),
    "pix2pix-batch": ("pix2pix", UNET, "batch", "batch", (128, 256)),
    "pix2pix-eval": ("pix2pix", UNET, "eval", "eval", (128, 256)),
}


def trained_file(tmp_path, family, arch):
    """A gantk-style `latest_net_G.pth` (+ its .json description), BatchNorm statistics non-trivial."""
    torch.manual_seed(0)
    net = define_G(**arch)
    with torch.no_grad():
        net.train()(torch.randn(2, 3, 128, 128))  # BatchNorm running statistics move
    path = tmp_path / "latest_net_G.pth"
    atomic_save(net.state_dict(), path)
    write_sidecar(path, family, "G", arch)
    return path


@pytest.mark.parametrize("case", CASES)
def test_export_releases_the_generator_bit_exact(tmp_path, case):
    family, arch, bn_mode, recorded, sizes = CASES[case]
    pth = trained_file(tmp_path, family, arch)
    out = tmp_path / "exp"
    assert main(["export", "--weights", str(pth), "--format", "safetensors", "--out", str(out),
                 "--parity_sizes", ",".join(map(str, sizes)), "--bn_mode", bn_mode]) == 0
    released = out / "latest_net_G.safetensors"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] == {"safetensors": released.name} and manifest["passed"]
    assert manifest["parity"][0]["rows"][0]["max_abs"] == 0.0
    with safe_open(released, framework="pt") as f:  # the library's own reader
        header, stored = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert (header["format"], header["family"], header["net"], header["bn_mode"]) == \
        ("gantk-net-v1", family, "G", recorded)
    assert json.loads(header["arch"]) == {**json.loads(header["arch"]), **arch}
    sd = torch.load(pth, weights_only=True)
    if recorded != "batch":  # the .pth's very tensors
        assert set(stored) == set(sd) and all(torch.equal(stored[k], sd[k]) for k in sd)
    else:  # the exported network: BatchNorm's affine weights in per-image norms, running statistics unused
        assert all(torch.equal(stored[k.replace(".weight", ".norm.weight")], v) for k, v in sd.items()
                   if k.endswith(".weight") and v.dim() == 1)
    eager = spec_for_generator(load_file(pth).net, family, "batch" if recorded == "batch" else "eval").net
    x = torch.rand(2, 3, sizes[0], sizes[0]) * 2 - 1
    with torch.no_grad():
        assert torch.equal(load_runner(released).run_torch(x), eager(x))
        assert torch.equal(load_file(released).net(x), eager(x))


def test_translate_takes_the_released_file(tmp_path):
    family, arch = CASES["cyclegan"][:2]
    pth = trained_file(tmp_path, family, arch)
    write_safetensors(load_file(pth).net, tmp_path / "latest_net_G.safetensors", family)
    photo = tmp_path / "in.png"
    Image.fromarray((torch.rand(72, 96, 3) * 255).byte().numpy()).save(photo)
    for weights in (pth, tmp_path / "latest_net_G.safetensors"):
        assert main(["translate", "--weights", str(weights), "--input", str(photo),
                     "--output", str(tmp_path / weights.suffix[1:])]) == 0
    pngs = sorted((tmp_path / "pth").rglob("*.png")), sorted((tmp_path / "safetensors").rglob("*.png"))
    assert pngs[0] and [p.name for p in pngs[0]] == [p.name for p in pngs[1]]
    for a, b in zip(*pngs):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), a.name


def test_a_foreign_safetensors_file_is_read_like_a_bare_state_dict(tmp_path):
    """A reference generator converted to safetensors by someone else (no gantk header): shapes say what it is."""
    torch.manual_seed(1)
    net = define_G(3, 3, 8, "resnet_6blocks", norm="instance")
    path = tmp_path / "horse2zebra.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata={"source": "converted"})
    loaded = load_file(path)
    assert loaded.arch["netG"] == "resnet_6blocks" and loaded.arch["ngf"] == 8 and loaded.family.name == "cyclegan"
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net.eval()(x))


def test_broken_files_are_one_line_errors(tmp_path):
    family, arch = CASES["cyclegan"][:2]
    good = write_safetensors(load_file(trained_file(tmp_path, family, arch)).net, tmp_path / "good.safetensors", family)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: not a readable safetensors file") as e:
        load_file(truncated)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"missing\.safetensors: checkpoint file not found"):
        load_file(tmp_path / "missing.safetensors")
    bad_arch = tmp_path / "bad_arch.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad_arch), metadata={"format": "gantk-net-v1", "family": "cyclegan",
                                                               "net": "G", "arch": "{not json"})
    with pytest.raises(CheckpointError, match=r"bad_arch\.safetensors: its header's gantk architecture"):
        load_file(bad_arch)
