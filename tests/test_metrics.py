"""gantk.metrics and `gantk eval` against independent truths: scikit-image's PSNR/SSIM on real photos,
hand-computed Fréchet distances and an explicit double-loop MMD^2; one-line errors before any work."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gantk import metrics
from gantk.cli import main
from gantk.errors import GantkError
from gantk.io import pil_to_tensor
from gantk.nn.inception import FIDInceptionV3, load_fid_inception
from gantk.nn.lpips import load_lpips

RNG = np.random.default_rng(0)


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 20) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert(img.ndim == 2 and "L" or "RGB"))


def skimage_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1 if a.ndim == 3 else None)


def random_cov(d: int, rng=RNG) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_by_eigh(mu1, s1, mu2, s2) -> float:
    """Tr sqrtm(S1 S2) = Tr sqrtm(S1^1/2 S2 S1^1/2): symmetric square roots only (eigh), no scipy sqrtm."""
    r = sqrtm_psd(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(sqrtm_psd(r @ s2 @ r)))


# ---- Fréchet distance ----

def test_frechet_of_identical_gaussians_is_zero():
    mu, s = RNG.normal(size=8), random_cov(8)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-6


def test_frechet_of_diagonal_gaussians_by_hand():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))  # 5.25 + (4 + 1 + 0) = 10.25
    assert want == pytest.approx(10.25)
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, abs=1e-9)


def test_frechet_eigh_and_pytorch_fid_sqrtm_routes_agree():
    """The default symmetric route against pytorch-fid's scipy sqrtm of the product: random full-rank covariances
    (1e-6 relative) and the diagonal case by hand."""
    for d in (2, 7, 64):
        mu1, mu2, s1, s2 = RNG.normal(size=d), RNG.normal(size=d), random_cov(d), random_cov(d)
        eigh = metrics.frechet_distance(mu1, s1, mu2, s2)
        assert eigh == pytest.approx(metrics.frechet_distance(mu1, s1, mu2, s2, method="sqrtm"), rel=1e-6)
    s1, s2 = np.diag([1.0, 4.0, 0.25]), np.diag([9.0, 1.0, 0.25])
    for method in metrics.FRECHET_METHODS:
        assert metrics.frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method=method) == pytest.approx(5.0)
    with pytest.raises(GantkError, match="eigh, sqrtm"):
        metrics.frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="svd")


def test_frechet_matches_a_direct_computation():
    for d in (1, 5, 32):
        mu1, mu2, s1, s2 = RNG.normal(size=d), RNG.normal(size=d), random_cov(d), random_cov(d)
        assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fid_by_eigh(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_of_singular_covariances_is_finite_and_close():
    """Fewer samples than dimensions: rank-deficient covariances (the eps offset path of pytorch-fid)."""
    f1, f2 = RNG.normal(size=(5, 12)), RNG.normal(size=(5, 12)) + 0.5
    (mu1, s1), (mu2, s2) = metrics.feature_statistics(f1), metrics.feature_statistics(f2)
    got = metrics.frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert np.isfinite(got)
    assert got == pytest.approx(fid_by_eigh(mu1, s1, mu2, s2), abs=1e-3)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fid_by_eigh(mu1, s1, mu2, s2), rel=1e-6)


def test_fid_from_few_features_takes_the_low_rank_route_exactly():
    """Fewer features than dimensions (singular covariances): the singular values of the cross product give the
    same FID as the symmetric route on the statistics, and as scipy's sqrtm route."""
    f1, f2 = RNG.normal(size=(20, 48)), RNG.normal(size=(13, 48)) * 1.5 + 0.3
    stats = (*metrics.feature_statistics(f1), *metrics.feature_statistics(f2))
    got = metrics.fid_from_features(f1, f2)
    assert got == pytest.approx(metrics.frechet_distance(*stats), rel=1e-7)  # (eigh: sqrt of rounding-size eigenvalues)
    assert got == pytest.approx(fid_by_eigh(*stats), rel=1e-7)
    assert got == pytest.approx(metrics.frechet_distance(*stats, method="sqrtm"), rel=1e-4)
    many = RNG.normal(size=(60, 8)), RNG.normal(size=(50, 8))  # more features than dimensions: the statistics
    assert metrics.fid_from_features(*many) == pytest.approx(fid_by_eigh(
        *metrics.feature_statistics(many[0]), *metrics.feature_statistics(many[1])), rel=1e-9)


def test_feature_statistics_are_mean_and_sample_covariance():
    f = RNG.normal(size=(50, 4))
    mu, s = metrics.feature_statistics(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(s, (f - mu).T @ (f - mu) / 49)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    f = RNG.normal(size=(400, 16))
    assert abs(metrics.fid_from_features(f, f)) < 1e-6
    fids = [metrics.fid_from_features(f, f + RNG.normal(scale=s, size=f.shape)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    kids = [metrics.kid(f, f + RNG.normal(scale=s, size=f.shape), subsets=20, subset_size=200)[0]
            for s in (0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(kids, kids[1:])), kids


# ---- KID ----

def mmd2_by_loops(x, y, d):
    k = lambda a, b: (sum(p * q for p, q in zip(a, b)) / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_polynomial_mmd2_is_the_unbiased_estimator():
    x = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 0.0, -1.0]]
    y = [[1.0, 1.0, 1.0], [-1.0, 0.5, 2.0], [0.0, 2.0, 0.0]]
    got = metrics.polynomial_mmd2(np.array(x), np.array(y))
    assert got == pytest.approx(mmd2_by_loops(x, y, 3), rel=1e-12)


@pytest.mark.parametrize("full_kernels", [metrics.KID_FULL_KERNELS, 0])  # kernels computed once | per subset
def test_kid_averages_subsets_drawn_as_torch_fidelity(full_kernels, monkeypatch):
    monkeypatch.setattr(metrics, "KID_FULL_KERNELS", full_kernels)
    f1, f2 = RNG.normal(size=(7, 3)), RNG.normal(size=(6, 3)) + 0.3
    rng = np.random.RandomState(5)
    want = []
    for _ in range(4):
        a, b = f1[rng.choice(7, 5, replace=False)], f2[rng.choice(6, 5, replace=False)]
        want.append(mmd2_by_loops(a.tolist(), b.tolist(), 3))
    mean, std = metrics.kid(f1, f2, subsets=4, subset_size=5, seed=5)
    assert (mean, std) == pytest.approx((np.mean(want), np.std(want)), rel=1e-10)
    assert metrics.kid(f1, f2, subsets=2, subset_size=1000)[0] == pytest.approx(  # lowered to 6 images
        metrics.kid(f1, f2, subsets=2, subset_size=6)[0])


# ---- PSNR, SSIM, MAE ----

@pytest.mark.parametrize("degrade", [lambda a: noisy(a, 20), lambda a: noisy(a, 3, seed=1), jpeg],
                         ids=["noise20", "noise3", "jpeg20"])
def test_psnr_ssim_match_scikit_image_on_a_photo(degrade):
    a = skdata.astronaut()[::2, ::2]
    b = degrade(a)
    assert metrics.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-6)
    assert metrics.ssim(a, b) == pytest.approx(skimage_ssim(a, b), abs=1e-4)
    assert metrics.mae(a, b) == pytest.approx(np.abs(a.astype(float) - b).mean())
    grey_a, grey_b = a[..., 0], b[..., 0]
    assert metrics.ssim(grey_a, grey_b) == pytest.approx(skimage_ssim(grey_a, grey_b), abs=1e-4)


def test_tensors_in_minus_one_one_score_as_their_8bit_images():
    a = skdata.astronaut()[:96, :96]
    b = jpeg(a)
    ta, tb = (pil_to_tensor(Image.fromarray(x)) for x in (a, b))
    for f in (metrics.psnr, metrics.ssim, metrics.mae):
        assert f(ta, tb.unsqueeze(0)) == pytest.approx(f(a, b), rel=1e-5)
    assert metrics.psnr(a, a) == float("inf") and metrics.ssim(a, a) == pytest.approx(1.0)


# ---- the FID Inception ----

def test_fid_inception_has_pytorch_fid_keys_and_2048_features():
    net = FIDInceptionV3()
    keys = net.state_dict().keys()
    for k in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
              "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7a.branch7x7x3_4.conv.weight",
              "Mixed_7c.branch3x3dbl_3b.bn.running_mean", "fc.weight", "fc.bias"):
        assert k in keys
    assert not any("AuxLogits" in k for k in keys)
    assert sum(p.numel() for p in net.parameters()) == 23_850_960  # torchvision inception_v3, 1008 classes, no aux
    assert tuple(net.fc.weight.shape) == (1008, 2048)


def test_random_inception_features_are_seeded_and_load_from_a_file(tmp_path):
    """2048-d features of photo crops; a file without num_batches_tracked (as pytorch-fid's) loads and gives the
    same features. (FID itself is tested on random features: scipy's sqrtm of a 2048-d product takes minutes.)"""
    net = load_fid_inception("random")
    crops = [skdata.astronaut()[y:y + 64, x:x + 64] for y, x in ((0, 0), (300, 300))]
    images = [pil_to_tensor(Image.fromarray(c)) for c in [*crops, noisy(crops[0], 60)]]
    feats = metrics.extract_features(net, images, batch_size=2)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all() and feats.std() > 0
    assert not np.allclose(feats[0], feats[2])
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "inception.pth")
    again = metrics.extract_features(load_fid_inception(str(tmp_path / "inception.pth")), images[:1])
    np.testing.assert_allclose(again, feats[:1], rtol=1e-5, atol=1e-6)


def test_inception_file_of_another_network_is_one_line(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "vgg.pth")
    with pytest.raises(GantkError, match="pytorch-fid") as e:
        load_fid_inception(str(tmp_path / "vgg.pth"))
    assert "\n" not in str(e.value)


# ---- gantk eval ----

def write_pairs(tmp_path):
    """results/ (JPEG-degraded) and reference/ photo crops matched by name, plus translate's images/ layout."""
    photo = skdata.astronaut()
    ref, res, images = tmp_path / "reference", tmp_path / "results", tmp_path / "images"
    for d in (ref, res, images):
        d.mkdir()
    truth = {}
    for i, (y, x) in enumerate(((0, 0), (120, 200), (300, 260))):
        a = photo[y:y + 48, x:x + 64]
        b = jpeg(a, 15)
        Image.fromarray(a).save(ref / f"x{i}.png")
        Image.fromarray(b).save(res / f"x{i}.png")
        Image.fromarray(a).save(images / f"x{i}_target.png")
        Image.fromarray(b).save(images / f"x{i}_fake.png")
        Image.fromarray(a).save(images / f"x{i}_real.png")
        truth[f"x{i}"] = (peak_signal_noise_ratio(a, b, data_range=255), skimage_ssim(a, b))
    return ref, res, images, truth


def test_eval_paired_end_to_end(tmp_path, capsys):
    ref, res, images, truth = write_pairs(tmp_path)
    for args in (["--results", str(res), "--reference", str(ref)], ["--results", str(images)]):
        out = tmp_path / "eval.json"
        assert main(["eval", *args, "--paired", "--out", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert [r["name"] for r in doc["per_image"]] == ["x0", "x1", "x2"]
        for r in doc["per_image"]:
            assert (r["psnr"], r["ssim"]) == pytest.approx(truth[r["name"]], abs=1e-4)
        assert doc["mean"]["psnr"] == pytest.approx(np.mean([t[0] for t in truth.values()]))
        assert doc["protocol"]["images"] == 3 and "ssim" in doc["protocol"]
        table = capsys.readouterr().out
        assert "PSNR" in table and "mean" in table and f"wrote {out}" in table


def test_eval_unpaired_fid_kid(tmp_path, capsys, monkeypatch):
    """The whole command with `--inception-weights random` resolved, the network swapped for 4x4 mean colours
    (48-d) to keep the test fast: FID of a set with itself is 0, with its JPEG copies more."""
    import gantk.nn.inception as inception
    monkeypatch.setattr(inception, "load_fid_inception",
                        lambda weights, device: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    ref, res, _, _ = write_pairs(tmp_path)
    o = ["--inception-weights", "random", "--fid-backend", "torch", "--cache-dir", str(tmp_path / "cache")]
    assert main(["eval", "--results", str(ref), "--reference", str(ref), *o, "--out", str(tmp_path / "self.json")]) == 0
    same = json.loads((tmp_path / "self.json").read_text())["fid"]
    out = tmp_path / "fid.json"
    assert main(["eval", "--results", str(res), "--reference", str(ref), *o, "--kid-subsets", "5",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert abs(same) < 1e-4 * doc["fid"] and np.isfinite(doc["kid"]["mean"])  # 3 images: singular, eps path
    p = doc["protocol"]
    assert p["images"] == {"results": 3, "reference": 3} and p["kid_subset_size"] == 3 and p["kid_subsets"] == 5
    assert p["fid_resize"] == "clean" and "bicubic" in p["fid_resize_clean"] and p["fid_backend"] == "torch"
    assert p["weights_file"] == "random" and doc["features_from"] == {"results": "computed", "reference": "cache"}
    assert "FID" in capsys.readouterr().out


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gantk: error:") and err.count("\n") == 1, err
    return err


def test_eval_errors_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    ref, res, images, _ = write_pairs(tmp_path)
    monkeypatch.delenv("GANTK_INCEPTION", raising=False)
    out = tmp_path / "e.json"
    o = ["--out", str(out)]
    assert "--inception-weights" in one_line_error(capsys, ["eval", "--results", str(res), "--reference", str(ref), *o])
    assert "no such file" in one_line_error(capsys, ["eval", "--results", str(res), "--reference", str(ref),
                                                     "--inception-weights", str(tmp_path / "none.pth"), *o])
    assert "--reference" in one_line_error(capsys, ["eval", "--results", str(res), "--inception-weights", "random", *o])
    assert "no such folder" in one_line_error(capsys, ["eval", "--results", str(tmp_path / "nope"), "--paired", *o])
    assert "_fake" in one_line_error(capsys, ["eval", "--results", str(res), "--paired", *o])
    (images / "x1_target.png").unlink()
    assert "x1" in one_line_error(capsys, ["eval", "--results", str(images), "--paired", *o])
    Image.new("RGB", (10, 10)).save(res / "extra.png")
    assert "extra" in one_line_error(capsys, ["eval", "--results", str(res), "--reference", str(ref), "--paired", *o])
    (res / "extra.png").unlink()
    Image.new("RGB", (10, 10)).save(res / "x0.png")
    assert "10x10" in one_line_error(capsys, ["eval", "--results", str(res), "--reference", str(ref), "--paired", *o])
    assert "--out" in one_line_error(capsys, ["eval", "--results", str(res), "--reference", str(ref), "--paired",
                                              "--out", str(tmp_path)])
    assert not out.exists()


# ---- LPIPS (paired, BicycleGAN diversity) and gantk eval with it ----

LPIPS_HEADS = str(Path(__file__).parent / "data" / "lpips_v0.1_alex.pth")  # the published v0.1 heads


def as_tensor(path) -> torch.Tensor:
    return pil_to_tensor(Image.open(path).convert("RGB"))[None]


def test_lpips_is_the_mean_over_pairs_and_takes_8bit_arrays():
    net = load_lpips("alex", LPIPS_HEADS, "random")
    a, b = RNG.integers(0, 256, (2, 2, 40, 40, 3), dtype=np.uint8)
    each = [net(pil_to_tensor(Image.fromarray(x))[None], pil_to_tensor(Image.fromarray(y))[None]).item()
            for x, y in zip(a, b)]
    assert metrics.lpips(net, a, b) == pytest.approx(np.mean(each), rel=1e-5)
    assert metrics.lpips(net, a[0], b[0]) == pytest.approx(each[0], rel=1e-5)
    assert metrics.lpips(net, a, a) == 0


def test_lpips_diversity_uses_consecutive_pairs_then_the_mean_over_inputs():
    """With constant images and |difference| as the distance: input 1 has samples 0, 0.5, -0.5 -> pairs 1-2, 2-3:
    (0.5 + 1) / 2 (all pairs would give 2/3); input 2: 0; mean 0.375."""
    dist = lambda x, y: (x - y).abs().mean((1, 2, 3))  # noqa: E731
    const = lambda v: torch.full((3, 4, 4), v)  # noqa: E731
    mean, per_input = metrics.lpips_diversity(dist, [[const(0), const(0.5), const(-0.5)], [const(0.2), const(0.2)]])
    assert per_input == pytest.approx([0.75, 0.0]) and mean == pytest.approx(0.375)
    with pytest.raises(GantkError, match="at least 2 samples"):
        metrics.lpips_diversity(dist, [[const(0)]])


def test_eval_paired_adds_lpips_with_its_protocol(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GANTK_LPIPS", raising=False)
    monkeypatch.delenv("GANTK_LPIPS_BACKBONE", raising=False)
    ref, res, _, _ = write_pairs(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["eval", "--results", str(res), "--reference", str(ref), "--paired", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert "lpips" not in doc["mean"] and "lpips_net" not in doc["protocol"]
    assert "LPIPS left out" in capsys.readouterr().err
    assert main(["eval", "--results", str(res), "--reference", str(ref), "--paired", "--out", str(out),
                 "--lpips-weights", LPIPS_HEADS, "--lpips-backbone", "random"]) == 0
    doc = json.loads(out.read_text())
    net = load_lpips("alex", LPIPS_HEADS, "random")
    for r in doc["per_image"]:
        assert r["lpips"] == pytest.approx(net(as_tensor(r["result"]), as_tensor(r["reference"])).item(), rel=1e-5)
        assert r["lpips"] > 0
    assert doc["mean"]["lpips"] == pytest.approx(np.mean([r["lpips"] for r in doc["per_image"]]))
    p = doc["protocol"]
    assert (p["lpips_net"], p["lpips_version"], p["lpips_weights"], p["lpips_backbone"]) == (
        "alex", "0.1", LPIPS_HEADS, "random") and "unit-normalised" in p["lpips"]
    assert "LPIPS" in capsys.readouterr().out


class ShiftG(torch.nn.Module):
    """A stand-in BicycleGAN generator: the input shifted by the first three entries of z (one colour per z)."""
    arch = {"nz": 8}

    def forward(self, x, z):
        return (x + z[:, :3, None, None] / 2).clamp(-1, 1)


def test_eval_diversity_of_bicyclegan_samples(tmp_path, capsys):
    """translate's files (<stem>_random_sample01..04 beside _input and _grid) grouped by input: LPIPS of the
    consecutive samples as computed from the files directly, and translate's L1 diversity (up to 8-bit rounding)."""
    from gantk.translate import translate_bicycle
    photo = skdata.astronaut()
    items = [(f"{i}.png", pil_to_tensor(Image.fromarray(photo[i * 100:i * 100 + 40, :48])), None) for i in range(2)]
    scores, _ = translate_bicycle(ShiftG(), None, items, tmp_path, n_samples=4, sync=False, seed=0)
    images, out = tmp_path / "images", tmp_path / "div.json"
    assert main(["eval", "--results", str(images), "--diversity", "--out", str(out),
                 "--lpips-weights", LPIPS_HEADS, "--lpips-backbone", "random"]) == 0
    doc = json.loads(out.read_text())
    net = load_lpips("alex", LPIPS_HEADS, "random")
    for r, stem in zip(doc["per_input"], ("0", "1")):
        s = [as_tensor(images / f"{stem}_random_sample{k:02d}.png") for k in range(1, 5)]
        assert r["name"] == stem and r["samples"] == 4
        assert r["lpips"] == pytest.approx(np.mean([net(s[k], s[k + 1]).item() for k in range(3)]), rel=1e-5)
        assert r["l1"] == pytest.approx(scores[f"{stem}.png"], abs=0.01)
    assert doc["mean"]["lpips"] == pytest.approx(np.mean([r["lpips"] for r in doc["per_input"]]))
    p = doc["protocol"]
    assert (p["inputs"], p["samples_per_input"], p["lpips_pairs_per_input"], p["lpips_net"]) == (2, 4, 3, "alex")
    assert "consecutive" in p["lpips_diversity"]
    captured = capsys.readouterr()
    assert "README's protocol uses 20" in captured.err and "LPIPS" in captured.out
    o = ["--out", str(tmp_path / "e.json")]
    assert "--paired" in one_line_error(capsys, ["eval", "--results", str(images), "--diversity", "--paired", *o])
    (tmp_path / "plain").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "plain" / "0_input.png")
    assert "random_sample" in one_line_error(capsys, ["eval", "--results", str(tmp_path / "plain"), "--diversity", *o])
    (images / "1_random_sample03.png").unlink()
    assert "same number" in one_line_error(capsys, ["eval", "--results", str(images), "--diversity", *o])
    assert not (tmp_path / "e.json").exists()


def test_eval_lpips_errors_are_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GANTK_LPIPS_BACKBONE", raising=False)
    ref, res, _, _ = write_pairs(tmp_path)
    o = ["--results", str(res), "--reference", str(ref), "--paired", "--out", str(tmp_path / "e.json")]
    assert "--lpips-backbone" in one_line_error(capsys, ["eval", *o, "--lpips-weights", LPIPS_HEADS])
    assert "lpips_v0.1_alex.pth" in one_line_error(capsys, ["eval", *o, "--lpips-net", "vgg", "--lpips-weights",
                                                             LPIPS_HEADS, "--lpips-backbone", "random"])
    assert "FID/KID" in one_line_error(capsys, ["eval", *o[:4], "--inception-weights", "random", *o[5:],
                                                "--lpips-weights", LPIPS_HEADS])
    Image.new("RGB", (30, 30)).save(res / "x0.png")
    Image.new("RGB", (30, 30)).save(ref / "x0.png")
    assert "31 px" in one_line_error(capsys, ["eval", *o, "--lpips-weights", "random", "--lpips-backbone", "random"])
    assert not (tmp_path / "e.json").exists()


def test_eval_name_translates_the_test_split_and_scores_only_its_outputs(sample_data, tmp_path, capsys, monkeypatch):
    """`gantk eval --name` on a CycleGAN experiment: translate testA, then FID/KID of the translations (not the
    inputs beside them) against testB, equal to the figure computed directly from the same stand-in features."""
    from conftest import tiny_args
    import gantk.nn.inception as inception
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    monkeypatch.setattr(inception, "load_fid_inception", lambda weights, device: pool)
    root = sample_data["unaligned"]
    assert main(tiny_args(root, tmp_path / "ck", max_iters=1)) == 0
    monkeypatch.chdir(tmp_path)
    o = ["--inception-weights", "random", "--fid-backend", "torch", "--no-cache", "--kid-subsets", "3"]
    assert main(["eval", "--name", "t", "--dataroot", str(root), "--checkpoints_dir", str(tmp_path / "ck"), *o]) == 0
    images = tmp_path / "results" / "t" / "eval_latest" / "images"
    doc = json.loads((images / "eval.json").read_text())
    fakes, refs = sorted(images.glob("*_fake.png")), sorted((root / "testB").iterdir())
    assert doc["mode"] == "unpaired" and doc["reference"] == str(root / "testB")
    assert doc["protocol"]["images"] == {"results": len(fakes), "reference": len(refs)} and len(fakes) > 1
    with torch.no_grad():
        feats = [np.concatenate([pool(metrics.fid_input(np.asarray(Image.open(f).convert("RGB")))[None]).numpy()
                                 for f in files]) for files in (fakes, refs)]
    assert doc["fid"] == pytest.approx(metrics.fid_from_features(*feats), rel=1e-5)
    assert "not the" in capsys.readouterr().err  # the note: the inputs beside the outputs are left out
    for argv, needle in ((["--name", "t"], "--name needs --dataroot"),
                         (["--name", "t", "--dataroot", str(root), "--paired"], "drop --results, --reference"),
                         ([], "give --results DIR")):
        assert main(["eval", *argv, "--checkpoints_dir", str(tmp_path / "ck")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gantk: error:") and err.count("\n") == 1 and needle in err, err
