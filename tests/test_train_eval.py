"""Given --eval_freq, `gantk train` scores the held-out split after epochs (eval.jsonl), keeps best_net_* by
--eval_metric, and a resumed run keeps the best so far; --tensorboard writes an event log TensorBoard reads."""
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_args
from gantk.cli import main
from gantk.data import make_dataset
from gantk.evaluate import run_eval
from gantk.io import save_image
from gantk.models import load, prepare_for_inference
from gantk.models.loading import load_encoder
from gantk.models.cyclegan import CycleGANConfig
from gantk.models.pix2pix import Pix2PixConfig
from gantk.train import evaluation
from test_bicyclegan import bicycle_args
from test_pix2pix import p2p_args
from test_train import assert_same_weights


def eval_rows(folder):
    return [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]


def nets(folder, prefix, names):
    return {n: torch.load(folder / f"{prefix}_net_{n}.pth", weights_only=True) for n in names}


def hwc_255(t):
    """A 1CHW tensor in [-1, 1] as an HxWxC float64 array on 0..255."""
    return (t[0].permute(1, 2, 0).double().numpy() + 1) * 127.5


def assert_paired_scores(row, translate, dataroot, n):
    """`row`'s PSNR/SSIM/MAE == scikit-image/numpy on translate(A, B) vs B over the first n test pairs (128 px)."""
    data = make_dataset(Pix2PixConfig(dataroot=str(dataroot), load_size=136, crop_size=128), "test", train=False)
    scores = {"psnr": [], "ssim": [], "mae": []}
    with torch.no_grad():
        for i in range(n):
            a, b = data[i]["A"][None], data[i]["B"][None]
            fake, real = hwc_255(translate(a, b)), hwc_255(b)
            scores["psnr"].append(peak_signal_noise_ratio(real, fake, data_range=255))
            scores["ssim"].append(structural_similarity(real, fake, gaussian_weights=True, sigma=1.5, data_range=255,
                                                        use_sample_covariance=False, channel_axis=-1))
            scores["mae"].append(np.abs(real - fake).mean())
    for k, v in scores.items():
        assert row[k] == pytest.approx(np.mean(v), rel=1e-6), k


def test_pix2pix_scores_equal_a_recomputation_with_the_best_net(sample_data, tmp_path):
    """eval.jsonl's PSNR/SSIM/MAE of the best epoch == scikit-image/numpy on best_net_G's outputs, run as
    `gantk translate` runs pix2pix (batch statistics, dropout seeded by --seed); best_net_G is that epoch's."""
    extra = dict(eval_freq=1, eval_num=3, save_epoch_freq=1, max_dataset_size=2)  # 2 pairs (train and test)
    assert main(p2p_args(sample_data["aligned"], tmp_path, **extra)) == 0
    folder = tmp_path / "p"
    rows = eval_rows(folder)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["images"] == 2 and r["phase"] == "test" for r in rows)
    best = max(rows, key=lambda r: r["psnr"])
    state = json.loads((folder / "best_state.json").read_text())
    assert (state["epoch"], state["metric"], state["value"]) == (best["epoch"], "psnr", best["psnr"])
    assert_same_weights(nets(folder, "best", ["G", "D"]), nets(folder, best["epoch"], ["G", "D"]))
    assert (folder / "web" / "eval_curve.png").is_file()
    assert "eval_curve.png" in (folder / "web" / "index.html").read_text()

    G = prepare_for_inference(load("p", tmp_path, "best").net, eval_mode=False)
    assert best["inference"] == G.inference == {"eval": False, "bn_mode": "batch", "dropout": True}
    torch.manual_seed(0)
    assert_paired_scores(best, lambda a, b: G(a), sample_data["aligned"], 2)

    # evaluating changes nothing in training: the same run without --eval_freq ends with the same weights
    assert main(p2p_args(sample_data["aligned"], tmp_path, "plain", max_dataset_size=2)) == 0
    assert_same_weights(nets(tmp_path / "plain", "latest", ["G", "D"]), nets(folder, "latest", ["G", "D"]))


def test_bicyclegan_scores_its_encoded_sample(sample_data, tmp_path):
    """BicycleGAN is scored as its test script's encoded sample: G(A, mu of E(B)) in eval mode."""
    extra = dict(eval_freq=1, eval_num=2, eval_metric="ssim", n_epochs_decay=1)
    assert main(bicycle_args(sample_data["aligned"], tmp_path, **extra)) == 0
    rows = eval_rows(tmp_path / "b")
    assert [r["epoch"] for r in rows] == [1, 2]
    best = max(rows, key=lambda r: r["ssim"])
    loaded = load("b", tmp_path, "best")
    G, E = prepare_for_inference(loaded.net, True), load_encoder(loaded)
    assert best["inference"] == G.inference == {"eval": True, "bn_mode": "none", "dropout": False}
    assert_paired_scores(best, lambda a, b: G(a, E(b)[0]), sample_data["aligned"], 2)  # E's own size: 128 px


def scripted(monkeypatch, values):
    """CycleGAN's scores replaced by `values`, one cycle_mae per evaluation."""
    it = iter(values)
    monkeypatch.setitem(evaluation.SCORERS, "cycle", lambda ev, model: ({"cycle_mae": next(it)}, {}))


def test_best_nets_stay_those_of_the_best_epoch_also_across_a_resume(sample_data, tmp_path, monkeypatch):
    """cycle_mae 5, 3 (best: lower), then resumed: 4. A resumed run that forgot the best would take epoch 3.
    The TensorBoard log of the three runs (stopped mid-epoch 2, at its end, then to the end) has each step once."""
    G_NETS = ["G_A", "G_B", "D_A", "D_B"]
    extra = dict(eval_freq=1, save_epoch_freq=1, display_freq=100, tensorboard=True)
    scripted(monkeypatch, [5.0, 3.0])
    assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=6, **extra)) == 0  # 1.5 epochs of 4
    assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=8, continue_train=True, **extra)) == 0
    scripted(monkeypatch, [4.0])
    assert main(tiny_args(sample_data["unaligned"], tmp_path, continue_train=True, **extra)) == 0
    folder = tmp_path / "t"
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()  # each step once across the three runs
    assert [e.step for e in acc.Scalars("loss/G_A")] == list(range(1, 13))
    assert [(e.step, e.value) for e in acc.Scalars("eval/cycle_mae")] == [(4, 5.0), (8, 3.0), (12, 4.0)]
    rows = eval_rows(folder)
    assert [(r["epoch"], r["cycle_mae"], r["best"]) for r in rows] == [(1, 5.0, True), (2, 3.0, True), (3, 4.0, False)]
    state = json.loads((folder / "best_state.json").read_text())
    assert (state["epoch"], state["iters"], state["value"], state["higher_is_better"]) == (2, 8, 3.0, False)
    assert_same_weights(nets(folder, "best", G_NETS), nets(folder, 2, G_NETS))
    with pytest.raises(AssertionError):
        assert_same_weights(nets(folder, "best", G_NETS), nets(folder, "latest", G_NETS))
    assert json.loads((folder / "best_net_G_A.json").read_text())["step"] == 8


def test_tensorboard_log_holds_losses_rates_scores_and_samples(sample_data, tmp_path, monkeypatch):
    """The event log read back with TensorBoard's EventAccumulator equals losses.jsonl and eval.jsonl; the
    CycleGAN cycle_mae equals numpy on the final networks' cycles, KID and FID `gantk eval` on their saved
    translations (a random-weight Inception: the test switch)."""
    monkeypatch.setenv("GANTK_INCEPTION", "random")
    assert main(tiny_args(sample_data["unaligned"], tmp_path, tensorboard=True, eval_freq=3, eval_num=2)) == 0
    folder = tmp_path / "t"
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0, "scalars": 0})  # 0: keep all
    acc.Reload()
    losses = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert {"loss/G_A", "loss/cycle_B", "lr/G", "lr/D", "eval/cycle_mae", "eval/kid"} <= set(acc.Tags()["scalars"])
    expected = [(r["iters"], pytest.approx(r["G_A"])) for r in losses]
    assert [(e.step, e.value) for e in acc.Scalars("loss/G_A")] == expected
    assert [e.value for e in acc.Scalars("lr/G")] == [pytest.approx(r["lr"]) for r in losses]
    assert acc.Tags()["images"] == ["samples"]
    assert [e.step for e in acc.Images("samples")] == [2, 4, 6, 8, 10, 12]  # --display_freq 2, as web/images
    (row,) = eval_rows(folder)
    assert row["metric"] == "kid"  # auto, given Inception weights
    assert [(e.step, e.value) for e in acc.Scalars("eval/cycle_mae")] == [(12, pytest.approx(row["cycle_mae"]))]

    G_A, G_B = (load("t", tmp_path, "latest", which=w).net for w in ("G_A", "G_B"))
    data = make_dataset(CycleGANConfig(dataroot=str(sample_data["unaligned"]), load_size=36, crop_size=32,
                                       max_dataset_size=4), "test", train=False)
    with torch.no_grad():
        cycle = [np.abs(hwc_255(g(f(data[i][k][None]))) - hwc_255(data[i][k][None])).mean()
                 for i in range(2) for k, f, g in (("A", G_A, G_B), ("B", G_B, G_A))]
    assert row["cycle_mae"] == pytest.approx(np.mean(cycle), rel=1e-6)

    with torch.no_grad():
        for i in range(2):
            save_image(G_A(data[i]["A"][None]), tmp_path / "fake" / f"{i}.png")
            save_image(data[i]["B"], tmp_path / "real" / f"{i}.png")
    record, _ = run_eval(tmp_path / "fake", tmp_path / "real", inception_weights="random", device="cpu", no_cache=True,
                         fid_backend="torch", log=lambda line: None)
    assert row["kid"] == pytest.approx(record["kid"]["mean"], rel=1e-5)
    assert row["fid"] == pytest.approx(record["fid"], rel=1e-5)


def fail(capsys, args, message, folder):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (folder / "latest_state.pt").exists()


@pytest.mark.parametrize("extra,message", [
    ({"eval_freq": 1, "eval_metric": "psnr"}, "--eval_metric psnr: not scored for --model cyclegan; expected one of "
                                              "cycle_mae, kid, fid"),
    ({"eval_freq": 1, "eval_metric": "kid"}, "Inception weights for FID/KID needed"),
    ({"eval_freq": 1, "eval_metric": "lpips"}, "'lpips' is not one of"),
])
def test_bad_evaluation_options_fail_before_training(sample_data, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.delenv("GANTK_INCEPTION", raising=False)
    fail(capsys, tiny_args(sample_data["unaligned"], tmp_path, **extra), message, tmp_path / "t")


def test_no_held_out_split_or_no_tensorboard_is_one_line(sample_data, tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    for split in ("trainA", "trainB"):
        shutil.copytree(sample_data["unaligned"] / split, root / split)
    fail(capsys, tiny_args(root, tmp_path, eval_freq=1), "has no held-out split; expected testA/ and testB/",
         tmp_path / "t")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    fail(capsys, tiny_args(sample_data["unaligned"], tmp_path, tensorboard=True),
         "--tensorboard: tensorboard is not installed (pip install 'gantk[tensorboard]')", tmp_path / "t")
