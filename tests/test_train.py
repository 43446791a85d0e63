"""Given the sample data, `gantk train` runs the CycleGAN recipe, saves, and resumes exactly."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import tiny_args
from gantk.cli import main
from gantk.models.cyclegan import CycleGANConfig, CycleGANModel


def nets(folder, names=("G_A", "G_B", "D_A", "D_B")):
    return {n: torch.load(folder / f"latest_net_{n}.pth", weights_only=True) for n in names}


def assert_same_weights(a, b, atol=0.0):
    for name in a:
        for k in a[name]:
            torch.testing.assert_close(a[name][k], b[name][k], rtol=0, atol=atol, msg=f"{name}.{k}")


def test_train_writes_checkpoints_samples_and_logs(sample_data, tmp_path):
    assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=5)) == 0
    run = tmp_path / "t"
    for f in ("latest_state.pt", "latest_net_G_A.pth", "latest_net_D_B.pth", "loss_log.txt",
              "train_opt.txt", "train_opt.json", "web/index.html"):
        assert (run / f).is_file(), f
    assert len(list((run / "web" / "images").glob("*.png"))) == 2  # display_freq 2 over 5 iterations
    assert "images/epoch001_iter0000004.png" in (run / "web" / "index.html").read_text()
    rows = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if k != "epoch")
    assert set(rows[0]) >= {"D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"}
    assert "(epoch: 1, iters: 1," in (run / "loss_log.txt").read_text()
    state = torch.load(run / "latest_state.pt", weights_only=True)
    assert (state["steps"], state["epoch"], state["epoch_iter"]) == (5, 2, 1)  # 4 images per epoch
    assert state["config"]["lambda_A"] == 10.0 and state["config"]["pool_size"] == 50


def test_resume_is_exact(sample_data, tmp_path):
    """7 iterations straight == 3 + resume + 4 (crossing two epoch ends, LR decay and a full pool)."""
    extra = dict(pool_size=2, display_freq=100)
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "straight", max_iters=7, **extra)) == 0
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "resumed", max_iters=3, **extra)) == 0
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "resumed", max_iters=7, continue_train=True, **extra)) == 0
    assert_same_weights(nets(tmp_path / "straight"), nets(tmp_path / "resumed"))
    s = torch.load(tmp_path / "resumed" / "latest_state.pt", weights_only=True)
    assert s["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * (1 - 1 / 3))  # epoch 2 of 1+2



def test_resume_at_an_epoch_end_with_dropout_is_exact(sample_data, tmp_path):
    """Stopping on an epoch's last batch finishes that epoch; dropout's global-RNG draws resume exactly."""
    extra = dict(pool_size=2, display_freq=100, dropout=True)
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "straight", max_iters=6, **extra)) == 0
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "resumed", max_iters=4, **extra)) == 0
    s = torch.load(tmp_path / "resumed" / "latest_state.pt", weights_only=True)
    assert (s["epoch"], s["epoch_iter"]) == (2, 0)  # 4 images per epoch: epoch 1 is complete
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "resumed", max_iters=6, continue_train=True, **extra)) == 0
    assert_same_weights(nets(tmp_path / "straight"), nets(tmp_path / "resumed"))

def first_step(**speed):
    """Losses and G_A gradients of one CycleGAN iteration from a fixed init (before any update)."""
    torch.manual_seed(0)
    cfg = CycleGANConfig(netG="resnet_6blocks", ngf=8, ndf=8, crop_size=32, **speed)
    model = CycleGANModel(cfg)
    model.setup()
    g = torch.Generator().manual_seed(1)
    model.set_input({"A": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1})
    model.optimize_parameters()
    return model.current_losses(), {k: p.grad for k, p in model.nets["G_A"].named_parameters()}


def assert_first_step_matches_eager(**speed):
    """fp32 speed options: eager losses to rel 1e-4, G gradients to 1e-4 of their scale."""
    losses, grads = first_step()
    s_losses, s_grads = first_step(**speed)
    for k in losses:
        assert s_losses[k] == pytest.approx(losses[k], rel=1e-4), k
    for k in grads:
        assert (s_grads[k] - grads[k]).abs().max() <= 1e-4 * grads[k].abs().max() + 1e-5, k  # biases before IN: true grad 0
    return losses


def test_channels_last_and_amp_match_eager_fp32():
    losses = assert_first_step_matches_eager(channels_last=True)
    amp_losses, _ = first_step(amp=True)  # bf16 autocast: ~3 significant digits
    for k in losses:
        assert amp_losses[k] == pytest.approx(losses[k], rel=0.05, abs=0.02), k


@pytest.mark.parametrize("extra,message", [
    ({"netG": "unet_256"}, "--netG unet_256 needs --crop_size divisible by 256, got 32"),
    ({"netG": "resnet_99blocks"}, "'resnet_99blocks' is not one of"),
    ({"crop_size": 64}, "--load_size 36 is smaller than --crop_size 64"),
    ({"batch_size": 0}, "--batch_size must be positive"),
])
def test_bad_options_fail_before_work(sample_data, tmp_path, capsys, extra, message):
    code = main(tiny_args(sample_data["unaligned"], tmp_path, **extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / "t" / "latest_state.pt").exists()


def test_missing_dataroot_is_one_line(tmp_path, capsys):
    assert main(tiny_args(tmp_path / "nowhere", tmp_path)) == 2
    assert capsys.readouterr().err.strip().endswith("nowhere: no such folder")


def test_torchrun_two_processes_equal_one_process_with_double_batch(sample_data, tmp_path):
    """DDP (gloo) with 2 x batch 1 averages gradients exactly like 1 process with batch 2 (no pool)."""
    common = dict(pool_size=0, max_iters=2, display_freq=100, norm="none")  # no IN: no near-zero bias grads for Adam to amplify
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = tiny_args(sample_data["unaligned"], tmp_path, "ddp", **common)
    cmd = [sys.executable, "-m", "gantk", "train", "--nproc_per_node", "2", *args[1:]]  # gantk's own launcher
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout + proc.stderr
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "single", batch_size=2, **common)) == 0
    assert_same_weights(nets(tmp_path / "ddp"), nets(tmp_path / "single"), atol=1e-5)


def test_a_failing_process_ends_in_one_line_per_process_and_a_summary(sample_data, tmp_path):
    """Both processes hit a non-finite loss (lr 1e30): each prints its reason once, tagged with its rank, and
    the launcher one summary line instead of torchrun's multi-line report; bad options fail before launching."""
    args = tiny_args(sample_data["unaligned"], tmp_path, "nan", max_iters=2, display_freq=100)
    cmd = [sys.executable, "-m", "gantk", "train", "--nproc_per_node", "2", *args[1:], "--lr", "1e30"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line[line.index("gantk: error:"):] for line in proc.stderr.splitlines() if "gantk: error:" in line]
    reasons, summary = errors[:-1], errors[-1]
    # the first process to fail ends the run; the launcher stops the other (which may not get to print)
    assert 1 <= len(reasons) <= 2 and all(re.match(r"gantk: error: \[rank [01]\] non-finite loss .* no state had "
                                                   r"been saved yet", e) for e in reasons), errors
    assert re.fullmatch(r"gantk: error: training stopped: (rank [01] \(exit code 2\)(, )?)+ failed \(the reason is "
                        r"printed above by the process\)(; stopped rank [01])?", summary), summary
    cmd[cmd.index("--dataroot") + 1] = str(tmp_path / "nowhere")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"gantk: error: --dataroot {tmp_path / 'nowhere'}: no such folder"


def test_compile_matches_eager():
    """torch.compile (inductor, CPU C++ codegen) of G and D gives the eager losses and gradients."""
    assert_first_step_matches_eager(compile=True)


def test_torchrun_resume_is_exact_with_pools_and_dropout(sample_data, tmp_path):
    """2 gloo processes, 6 iterations straight == 3, stop, --continue_train to 6: the image pools fill (size 2)
    and dropout is on, so each process's own RNG stream and pools must come back."""
    common = dict(pool_size=2, dropout=True, display_freq=100, save_latest_freq=1000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(name, **extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
               "-m", "gantk"] + tiny_args(sample_data["unaligned"], tmp_path, name, **common, **extra)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    torchrun("straight", max_iters=6)
    torchrun("resumed", max_iters=3)
    torchrun("resumed", max_iters=6, continue_train=True)
    state = torch.load(tmp_path / "resumed" / "latest_state.pt", weights_only=True)
    assert len(state["ranks"]) == 2 and state["steps"] == 6
    assert_same_weights(nets(tmp_path / "straight"), nets(tmp_path / "resumed"))
