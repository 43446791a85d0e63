"""The demo's quality check, step by step as scripts/demo.sh runs it: train CycleGAN on photo2vintage, translate
testA, write the true vintage photos (the B domain is a known function of A) and `gantk eval --paired --baseline`:
G_A(testA) vs vintage(testA) beside the identity baseline testA vs vintage(testA)."""
import json

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from conftest import cli_flags
from gantk.cli import main
from gantk.data.sample import write_vintage_targets


def demo_eval(data, tmp_path, **train) -> dict:
    """scripts/demo.sh's train -> translate -> targets -> eval at 32 px; returns eval.json."""
    ckpt, results = tmp_path / "ckpt", tmp_path / "results"
    assert main(["train", "--model", "cyclegan", "--dataroot", str(data), "--checkpoints_dir", str(ckpt), "--name", "d",
                 "--netG", "resnet_6blocks", "--load_size", "36", "--crop_size", "32", "--num_threads", "0",
                 "--print_freq", "1000", "--display_freq", "100000", *cli_flags(**train)]) == 0
    assert main(["translate", "--name", "d", "--checkpoints_dir", str(ckpt), "--dataroot", str(data),
                 "--output", str(results)]) == 0
    write_vintage_targets(data / "testA", results / "images")
    assert main(["eval", "--results", str(results / "images"), "--paired", "--baseline"]) == 0
    return json.loads((results / "images" / "eval.json").read_text())


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_baseline_scores_the_inputs_against_the_targets(sample_data, tmp_path, capsys):
    """The baseline rows are the PSNR of each test photo (translate's _real) against its vintage version, as
    scikit-image computes it from the files; the table prints the baseline's mean below the translation's."""
    doc = demo_eval(sample_data["unaligned"], tmp_path, ngf=4, ndf=4, max_iters=2, n_epochs=1, n_epochs_decay=0)
    images = tmp_path / "results" / "images"
    rows = {r["name"]: r for r in doc["baseline"]["per_image"]}
    assert len(rows) == 8 and doc["protocol"]["baseline"].startswith("identity")
    for name, r in rows.items():
        want = peak_signal_noise_ratio(_rgb(images / f"{name}_target.png"), _rgb(images / f"{name}_real.png"))
        assert r["psnr"] == pytest.approx(want, rel=1e-9)
    table = capsys.readouterr().out
    assert f"\nbaseline  {doc['baseline']['mean']['psnr']:>8.3f}" in table
    assert main(["eval", "--results", str(images), "--reference", str(images), "--paired", "--baseline"]) == 0
    assert main(["eval", "--results", str(images), "--reference", str(sample_data["unaligned"] / "testA"),
                 "--paired", "--baseline"]) == 2
    assert "--baseline scores translate's inputs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_training_run_beats_the_identity_baseline(sample_data, tmp_path):
    """Training works: after 800 iterations at 32 px (ngf/ndf 8, lr 5e-4, 10 epochs + 10 of linear decay; 50 s
    on two quiet CPU cores, up to 6 min when they are shared) G_A(testA) is closer to vintage(testA) than testA itself. Measured: 20.85 dB
    (seed 0; 20.00 dB with --seed 1) against the identity baseline's 19.48 dB. Shorter or constant-rate runs did not
    beat it (200-600 iterations at ngf 4-24: 16.4-19.4 dB; 6 + 6 epochs: 18.75 dB), so this is the shortest run
    found that shows learning."""
    doc = demo_eval(sample_data["unaligned"], tmp_path, ngf=8, ndf=8, lr=0.0005, n_epochs=10, n_epochs_decay=10)
    assert doc["mean"]["psnr"] > doc["baseline"]["mean"]["psnr"], (doc["mean"], doc["baseline"]["mean"])
