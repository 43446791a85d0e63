"""gantk.nn.lpips against independent truths: torchvision's AlexNet/VGG16 `features` key layouts written out from
the published architectures, the published v0.1 head files (tests/data, loaded strictly), hand-computed
distances, and numbers computed by the published `lpips` 0.1.4 package for the same weights and images."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from gantk.errors import GantkError
from gantk.io import pil_to_tensor
from gantk.nn.lpips import LPIPS, load_lpips, unit_normalize

DATA = Path(__file__).parent / "data"
HEADS = {net: DATA / f"lpips_v0.1_{net}.pth" for net in ("alex", "vgg")}

# torchvision's alexnet / vgg16 `features` convolutions (weight shapes; each has a bias of the first size)
TORCHVISION_FEATURES = {
    "alex": [(0, (64, 3, 11, 11)), (3, (192, 64, 5, 5)), (6, (384, 192, 3, 3)), (8, (256, 384, 3, 3)),
             (10, (256, 256, 3, 3))],
    "vgg": [(0, (64, 3, 3, 3)), (2, (64, 64, 3, 3)), (5, (128, 64, 3, 3)), (7, (128, 128, 3, 3)),
            (10, (256, 128, 3, 3)), (12, (256, 256, 3, 3)), (14, (256, 256, 3, 3)), (17, (512, 256, 3, 3)),
            (19, (512, 512, 3, 3)), (21, (512, 512, 3, 3)), (24, (512, 512, 3, 3)), (26, (512, 512, 3, 3)),
            (28, (512, 512, 3, 3))],
}
HEAD_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}  # relu1..relu5 taps
# the published lpips 0.1.4 package (LPIPS(net, version="0.1"), its own heads, torchvision's layer chains with
# the weights of `backbone_file`) on `images()`: d(a, b), d(a, a + noise)
PUBLISHED = {"alex": (0.1932579, 0.003111917), "vgg": (0.1905279, 0.007329267)}


def backbone_file(net: str, path: Path) -> Path:
    """A torchvision-layout file (numpy-seeded He-normal weights, small biases) plus a classifier key to ignore."""
    rs = np.random.RandomState(0)
    sd = {}
    for i, shape in TORCHVISION_FEATURES[net]:
        std = np.sqrt(2 / (shape[0] * shape[2] * shape[3]))
        sd[f"features.{i}.weight"] = torch.from_numpy(rs.normal(0, std, shape).astype(np.float32))
        sd[f"features.{i}.bias"] = torch.from_numpy(rs.normal(0, 0.01, shape[0]).astype(np.float32))
    sd["classifier.6.weight"] = torch.zeros(10, 4)
    torch.save(sd, path)
    return path


def images():
    """Two 32x40 photo crops a, b and a noisy copy of a: (a, a), (b, a + noise) as [-1, 1] batches."""
    photo = skdata.astronaut()
    a, b = photo[0:32, 0:40], photo[120:152, 200:240]
    c = np.clip(a.astype(int) + np.random.RandomState(1).randint(-20, 21, a.shape), 0, 255).astype(np.uint8)
    t = lambda x: pil_to_tensor(Image.fromarray(x))  # noqa: E731
    return torch.stack([t(a), t(a)]), torch.stack([t(b), t(c)])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_backbone_has_torchvision_feature_keys(net):
    expected = {}
    for i, shape in TORCHVISION_FEATURES[net]:
        expected[f"features.{i}.weight"], expected[f"features.{i}.bias"] = shape, shape[:1]
    sd = LPIPS(net).backbone.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert list(sd) == list(expected)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_heads_have_the_published_keys_and_load_strictly(net):
    published = torch.load(HEADS[net], map_location="cpu", weights_only=True)
    want = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(HEAD_CHANNELS[net])}
    assert {k: tuple(v.shape) for k, v in published.items()} == want
    assert {k: tuple(v.shape) for k, v in LPIPS(net).heads.state_dict().items()} == want
    model = load_lpips(net, str(HEADS[net]), "random")
    for k, v in model.heads.state_dict().items():
        assert torch.equal(v, published[k])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_distances_match_the_published_package(net, tmp_path):
    model = load_lpips(net, str(HEADS[net]), str(backbone_file(net, tmp_path / "tv.pth")))
    x, y = images()
    assert model(x, y).tolist() == pytest.approx(PUBLISHED[net], rel=1e-4)


def test_symmetric_and_zero_for_identical_images():
    model, (x, y) = load_lpips("alex", "random", "random"), images()
    d = model(x, y)
    assert (d > 0).all() and torch.allclose(model(y, x), d, rtol=1e-5)
    assert model(x, x).abs().max() == 0


def test_distance_by_hand():
    """Heads of ones except lin0 = (1, 0.5, 0, ...): layer 0 at one of two pixels has a = (3, 4)/5, b = (1, 0):
    (0.6 - 1)^2 * 1 + 0.8^2 * 0.5 = 0.48, averaged over 2 pixels = 0.24; the other layers are equal."""
    model = LPIPS("alex").eval()
    for head in model.heads:
        torch.nn.init.ones_(head.model[1].weight)
    w0 = model.heads.lin0.model[1].weight
    with torch.no_grad():
        w0.zero_()
        w0[0, :2] = torch.tensor([1.0, 0.5]).view(2, 1, 1)
    fx = [torch.ones(1, c, 1, 2) for c in HEAD_CHANNELS["alex"]]
    fy = [f.clone() for f in fx]
    fx[0] = torch.zeros(1, 64, 1, 2)
    fx[0][0, :2, 0, 0], fx[0][0, 0, 0, 1] = torch.tensor([3.0, 4.0]), 2.0
    fy[0] = torch.zeros(1, 64, 1, 2)
    fy[0][0, 0, 0, 0], fy[0][0, 0, 0, 1] = 7.0, 1.0
    fx, fy = [unit_normalize(f) for f in fx], [unit_normalize(f) for f in fy]
    assert fx[0][0, :2, 0, 0].tolist() == pytest.approx([0.6, 0.8])
    assert model.distance(fx, fy).item() == pytest.approx(0.24)


def test_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("GANTK_LPIPS", raising=False)
    monkeypatch.delenv("GANTK_LPIPS_BACKBONE", raising=False)
    cases = [
        (dict(net="alex"), "--lpips-weights"),
        (dict(net="alex", heads=str(HEADS["alex"])), "--lpips-backbone"),
        (dict(net="squeeze", heads="random", backbone="random"), "--lpips-net"),
        (dict(net="alex", heads=str(HEADS["vgg"]), backbone="random"), "lpips_v0.1_vgg.pth"),
        (dict(net="vgg", heads="random", backbone=str(backbone_file("alex", tmp_path / "a.pth"))), "a.pth"),
        (dict(net="alex", heads="random", backbone=str(tmp_path / "none.pth")), "no such file"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(GantkError) as e:
            load_lpips(**kwargs)
        assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(GantkError, match="at least 31 px"):
        load_lpips("alex", "random", "random")(torch.zeros(1, 3, 30, 64), torch.zeros(1, 3, 30, 64))


def test_environment_names_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GANTK_LPIPS", str(HEADS["alex"]))
    monkeypatch.setenv("GANTK_LPIPS_BACKBONE", str(backbone_file("alex", tmp_path / "a.pth")))
    x, y = images()
    assert load_lpips("alex")(x, y).tolist() == pytest.approx(PUBLISHED["alex"], rel=1e-4)
