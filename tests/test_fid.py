"""FID protocol, feature cache and backends: clean-fid's resize against PIL itself, the two resize modes,
features cached per folder (reused, recomputed on any change), OpenVINO against torch eager."""
import hashlib
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from gantk import evaluate, metrics
from gantk.cli import main
from gantk.errors import GantkError
from gantk.nn import inception
from gantk.nn.inception import feature_extractor, load_fid_inception

PHOTO = skdata.astronaut()  # 512 x 512 RGB


def test_clean_resize_is_pil_bicubic_per_float_channel():
    """clean-fid's documented resize: PIL bicubic of each channel as a float32 ("F") image, clipped to 0..255;
    close to PIL's own 8-bit RGB bicubic resize (same filter; that path rounds between its two passes, which is
    what clean-fid avoids), antialiased when shrinking."""
    img = PHOTO[:256, 40:240]
    got = metrics.clean_resize(img)
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    for c in range(3):
        want = np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize(
            (299, 299), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(got[:, :, c], np.clip(want, 0, 255))
    rgb8 = np.asarray(Image.fromarray(img).resize((299, 299), Image.Resampling.BICUBIC), dtype=np.float32)
    diff = np.abs(got - rgb8)
    assert diff.mean() < 0.4 and np.percentile(diff, 99.9) < 1.5 and diff.max() < 4
    stripes = np.zeros((598, 598, 3), np.uint8)
    stripes[:, ::2] = 255  # a 1 px pattern shrunk 2x: antialiasing averages it to mid-grey, point sampling cannot
    assert np.abs(metrics.clean_resize(stripes)[:, 2:-2] - 127.5).max() < 2  # (borders: PIL clamps its window)
    edge = np.zeros((40, 40, 3), np.uint8)
    edge[:, 20:] = 255  # bicubic overshoots at a hard edge: clipped to 0..255
    up = metrics.clean_resize(edge)
    assert up.min() == 0 and up.max() == 255


def test_resize_modes_give_different_network_inputs_and_features():
    """clean: a 299 x 299 input the network leaves as it is; legacy-pytorch: the image at its size, resized in
    the network bilinearly (pytorch-fid). The two give different features of the same photo."""
    img = PHOTO[::2, ::2][:200, :256]
    clean, legacy = metrics.fid_input(img, "clean"), metrics.fid_input(img, "legacy-pytorch")
    assert clean.shape == (3, 299, 299) and legacy.shape == (3, 200, 256)
    np.testing.assert_allclose(clean.numpy(), metrics.clean_resize(img).transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    assert torch.equal(inception.resize_299(clean[None]), clean[None])
    want = F.interpolate(legacy[None], size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.equal(inception.resize_299(legacy[None]), want)
    net = load_fid_inception("random")
    f = metrics.extract_features(net, [clean, legacy])
    assert f.shape == (2, 2048)
    assert np.abs(f[0] - f[1]).max() > 1e-3 * np.abs(f).max()
    with pytest.raises(GantkError, match="--fid-resize"):
        metrics.fid_input(img, "bilinear")


def pooled(calls: list):
    """A stand-in FID network (4 x 4 mean colours, 48-d) that counts the images it sees."""
    def net(x):
        calls.append(len(x))
        return F.adaptive_avg_pool2d(x, 4).flatten(1)
    return net


def write_set(folder, offset: int, n: int = 4):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(PHOTO[offset + 30 * i:offset + 30 * i + 64, 100:164]).save(folder / f"im{i}.png")


def test_features_are_cached_per_folder_and_any_change_recomputes(tmp_path):
    root, cache = tmp_path / "real", tmp_path / "cache"
    write_set(root, 0)
    calls = []

    def run(resize="clean", key=None, use_cache=True):
        files = sorted(root.rglob("*.png"))
        return evaluate.folder_features(files, root, pooled(calls), resize, key or {"resize": resize},
                                        cache if use_cache else None, log=lambda m: None)

    first, src = run()
    assert src == "computed" and sum(calls) == 4 and first.shape == (4, 48)
    again, src = run()
    assert src == "cache" and sum(calls) == 4
    np.testing.assert_array_equal(again, first)
    assert [p.suffix for p in cache.iterdir()] == [".npy"]  # written by rename: no temp file left

    Image.fromarray(PHOTO[300:364, 100:164]).save(root / "im2.png")  # a changed file
    changed, src = run()
    assert src == "computed" and sum(calls) == 8
    np.testing.assert_array_equal(changed[[0, 1, 3]], first[[0, 1, 3]])
    assert not np.array_equal(changed[2], first[2])
    (root / "sub").mkdir()
    Image.fromarray(PHOTO[:64, :64]).save(root / "sub" / "x.png")
    assert run()[1] == "computed" and sum(calls) == 13  # an added file (in a subfolder)
    assert run(key={"resize": "clean", "weights_sha256": "other"})[1] == "computed"  # other weights
    assert run("legacy-pytorch")[1] == "computed"
    assert run()[1] == "cache" and run(use_cache=False)[1] == "computed"

    for p in cache.glob("*.npy"):
        p.write_bytes(b"broken")
    assert run()[1] == "computed" and run()[1] == "cache"  # a damaged cache file is computed again, rewritten


def test_eval_reuses_the_reference_features_and_records_the_protocol(tmp_path, monkeypatch, capsys):
    """`gantk eval` twice on a fixed reference folder: the second run computes only the results' features."""
    calls = []
    monkeypatch.setattr(inception, "load_fid_inception", lambda weights, device: None)
    monkeypatch.setattr(inception, "feature_extractor", lambda net, backend, ir: pooled(calls))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in weights")  # hashed only: the network is the stand-in above
    real, fake = tmp_path / "real", tmp_path / "fake"
    write_set(real, 0)
    write_set(fake, 200, 3)
    o = ["eval", "--results", str(fake), "--reference", str(real), "--inception-weights", str(weights),
         "--cache-dir", str(tmp_path / "cache"), "--kid-subsets", "3", "--fid-backend", "torch"]
    assert main([*o, "--out", str(tmp_path / "a.json")]) == 0
    assert sum(calls) == 7
    write_set(fake, 250, 3)
    assert main([*o, "--out", str(tmp_path / "b.json"), "--fid-resize", "legacy-pytorch"]) == 0
    assert sum(calls) == 14  # another protocol: both sets again
    assert main([*o, "--out", str(tmp_path / "c.json")]) == 0
    assert sum(calls) == 17  # the reference set from the cache
    doc = json.loads((tmp_path / "c.json").read_text())
    p = doc["protocol"]
    assert doc["features_from"] == {"results": "computed", "reference": "cache"}
    assert p["fid_resize"] == "clean" and p["images"] == {"results": 3, "reference": 4}
    assert (p["kid_subsets"], p["kid_subset_size"]) == (3, 3) and p["weights_file"] == "inception.pth"
    assert p["weights_sha256"] == hashlib.sha256(b"stand-in weights").hexdigest()[:8]
    assert json.loads((tmp_path / "b.json").read_text())["protocol"]["fid_resize"] == "legacy-pytorch"
    assert "clean resize" in capsys.readouterr().out
    assert main([*o, "--no-cache", "--out", str(tmp_path / "d.json")]) == 0 and sum(calls) == 24


def test_openvino_features_match_torch_and_the_converted_model_is_reused(tmp_path, monkeypatch):
    """The OpenVINO path (fp32 on CPU) against torch eager, with a small stand-in network (converting the full
    Inception takes tens of seconds; benchmarks/fid.py compares it on the real network)."""
    ov = pytest.importorskip("openvino")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten()).eval()
    x = torch.rand(3, 3, 64, 80) * 2 - 1  # not 299 px: resized as the network's own resize would
    want = net(inception.resize_299(x)).detach()
    ir = tmp_path / "ov" / "net.xml"
    got = feature_extractor(net, "openvino", ir)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert ir.is_file() and ir.with_suffix(".bin").is_file()
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    torch.testing.assert_close(feature_extractor(net, "openvino", ir)(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feature_extractor(net, "torch")(x), want, rtol=1e-5, atol=1e-5)


def test_backend_choice(monkeypatch):
    assert inception.resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(GantkError, match="--fid-backend"):
        inception.resolve_backend("onnx", "cpu")
    monkeypatch.setitem(sys.modules, "openvino", None)  # not importable
    assert inception.resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(GantkError, match="not installed"):
        inception.resolve_backend("openvino", "cpu")
