"""Given hostile situations (a second run, a killed run, damaged files, NaN, bad options, preemption), `gantk
train` keeps every good file and ends in the right result or one line that names the cause."""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import tiny_args
from gantk.checkpoints import atomic_save
from gantk.cli import main
from gantk.errors import CheckpointError
from gantk.models import define_G, load_generator
from gantk.models.cyclegan import CycleGANModel
from gantk.train.lock import ExperimentLock


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.split("\r")[-1]  # after tqdm's progress line, which it clears
    assert err.startswith("gantk: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def trained(sample_data, tmp_path):
    """A one-iteration experiment 't' under tmp_path: (checkpoints dir, dataroot)."""
    assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=1)) == 0
    return tmp_path, sample_data["unaligned"]


def test_second_run_on_a_locked_experiment_refuses_and_names_the_holder(sample_data, tmp_path, capsys):
    with ExperimentLock(tmp_path / "t"):
        assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=1)) == 2
    one_line_error(capsys, "in use by another gantk train", f"pid {os.getpid()}")
    assert not (tmp_path / "t" / "latest_state.pt").exists()
    # a lock left by a killed process is taken over
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from gantk.train.lock import ExperimentLock
        with ExperimentLock({str(tmp_path / 't')!r}):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main(tiny_args(sample_data["unaligned"], tmp_path, max_iters=1)) == 0


def test_new_run_over_a_trained_experiment_needs_continue_or_overwrite(trained, capsys):
    ckpt, data = trained
    state = ckpt / "t" / "latest_state.pt"
    before = digest(state)
    assert main(tiny_args(data, ckpt, max_iters=1)) == 2
    one_line_error(capsys, "--continue_train", "--overwrite")
    assert digest(state) == before
    assert main(tiny_args(data, ckpt, max_iters=2, overwrite=True)) == 0
    assert torch.load(state, weights_only=True)["steps"] == 2


def test_non_finite_loss_stops_without_saving(trained, capsys, monkeypatch):
    ckpt, data = trained
    state = ckpt / "t" / "latest_state.pt"
    before = {p.name: digest(p) for p in (ckpt / "t").glob("latest_*")}
    real = CycleGANModel.current_losses
    monkeypatch.setattr(CycleGANModel, "current_losses", lambda self: {**real(self), "G_A": float("nan")})
    assert main(tiny_args(data, ckpt, max_iters=3, continue_train=True)) == 2
    one_line_error(capsys, "non-finite loss (G_A=nan)", "keeps the last good state")
    assert {p.name: digest(p) for p in (ckpt / "t").glob("latest_*")} == before
    assert torch.load(state, weights_only=True)["steps"] == 1


def test_non_finite_weights_are_never_saved(trained):
    from gantk.train.engine import save_nets
    ckpt, _ = trained
    cfg_dict = torch.load(ckpt / "t" / "latest_state.pt", weights_only=True)["config"]
    from gantk.models.cyclegan import CycleGANConfig
    model = CycleGANModel(CycleGANConfig.from_dict(cfg_dict))
    with torch.no_grad():
        next(model.nets["G_B"].parameters()).fill_(float("inf"))
    with pytest.raises(Exception, match="non-finite weights in G_B"):
        save_nets(model, ckpt / "t", "latest", 9)
    assert torch.isfinite(torch.load(ckpt / "t" / "latest_net_G_B.pth", weights_only=True)["model.1.weight"]).all()


def test_damaged_files_are_refused_by_their_checksum(trained, capsys):
    ckpt, data = trained
    for name in ("latest_state.pt", "latest_net_G_A.pth"):
        path = ckpt / "t" / name
        assert (ckpt / "t" / f"{name}.sha256").read_text().split() == [digest(path), name]  # sha256sum -c format
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one bit inside the tensor data
        path.write_bytes(bytes(raw))
    assert main(tiny_args(data, ckpt, max_iters=2, continue_train=True)) == 2
    one_line_error(capsys, "latest_state.pt: its SHA-256 differs")
    with pytest.raises(CheckpointError, match="latest_net_G_A.pth: its SHA-256 differs"):
        load_generator(ckpt / "t" / "latest_net_G_A.pth")


def test_a_mixed_set_of_networks_is_refused_and_stale_temps_are_removed(trained, capsys):
    ckpt, data = trained
    side = ckpt / "t" / "latest_net_G_B.json"
    meta = json.loads(side.read_text())
    assert meta["step"] == 1  # images seen when it was saved
    side.write_text(json.dumps({**meta, "step": meta["step"] + 1}))
    assert main(["translate", "--name", "t", "--checkpoints_dir", str(ckpt), "--input", str(data / "testA")]) == 2
    one_line_error(capsys, "come from different saves", "--continue_train")
    stale = ckpt / "t" / ".latest_state.pt.x1y2.tmp"
    stale.write_bytes(b"\0" * 1000)
    assert main(tiny_args(data, ckpt, max_iters=2, continue_train=True)) == 0
    steps = {n: json.loads((ckpt / "t" / f"latest_net_{n}.json").read_text())["step"] for n in ("G_A", "G_B")}
    assert not stale.exists() and steps == {"G_A": 2, "G_B": 2}  # one consistent set again


@pytest.mark.parametrize("flag,value,words", [
    ("max_iters", -3, "--max_iters must be >= 0"), ("lr", -1, "--lr must be >= 0"),
    ("beta1", 2, "--beta1 must be in [0, 1)"), ("pool_size", -1, "--pool_size must be >= 0"),
    ("num_threads", -1, "--num_threads must be >= 0"), ("input_nc", 0, "--input_nc must be positive"),
    ("max_dataset_size", -1, "--max_dataset_size must be >= 0"), ("device", "tpu", "--device 'tpu'"),
    ("device", "cuda", "--device cuda"),
])
def test_bad_training_options_are_one_line_before_any_work(trained, capsys, flag, value, words):
    if flag == "device" and value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    ckpt, data = trained
    before = digest(ckpt / "t" / "latest_state.pt")
    assert main(tiny_args(data, ckpt, continue_train=True, **{flag: value})) == 2
    one_line_error(capsys, words)
    assert digest(ckpt / "t" / "latest_state.pt") == before


def test_resuming_another_familys_state_is_one_line(trained, capsys):
    ckpt, data = trained
    args = tiny_args(data, ckpt, continue_train=True)
    args[args.index("cyclegan")] = "pix2pix"
    args += ["--dataset_mode", "unaligned", "--netG", "resnet_6blocks"]
    assert main(args) == 2
    one_line_error(capsys, "not a gantk pix2pix training state", "cyclegan")


def test_disk_full_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_save({"a": torch.ones(2)}, tmp_path / "s.pt")

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=f"no space left on {tmp_path}: s.pt was not written"):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt", "s.pt.sha256"]


def test_sigterm_saves_the_state_before_leaving(trained, capsys, monkeypatch):
    ckpt, data = trained
    real, calls = CycleGANModel.optimize_parameters, []

    def step_then_preempt(self):
        real(self)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(CycleGANModel, "optimize_parameters", step_then_preempt)
    assert main(tiny_args(data, ckpt, max_iters=10, continue_train=True)) == 2
    one_line_error(capsys, "stopped by SIGTERM after iteration 3", "--continue_train")
    assert torch.load(ckpt / "t" / "latest_state.pt", weights_only=True)["steps"] == 3


def test_images_of_different_sizes_in_one_batch_are_one_line(tmp_path, capsys):
    for domain in ("trainA", "trainB"):
        (tmp_path / "d" / domain).mkdir(parents=True)
        for i, size in enumerate((32, 40)):
            Image.new("RGB", (size, size), (i * 90, 60, 30)).save(tmp_path / "d" / domain / f"{i}.png")
    args = tiny_args(tmp_path / "d", tmp_path, max_iters=1, preprocess="none", batch_size=2, serial_batches=True)
    assert main(args) == 2
    one_line_error(capsys, "--preprocess none with --batch_size 2", "crop preprocess")


@pytest.mark.parametrize("command", [
    ["bench", "--netG", "resnet_6blocks", "--ngf", "4", "--sizes", "0"],
    ["bench", "--netG", "resnet_6blocks", "--ngf", "4", "--batches", "1,0"],
    ["bench", "--netG", "resnet_6blocks", "--ngf", "4", "--sizes", "32", "--out", "FILE/b"],
    ["data", "sample", "--out", "FILE"],
    ["train", "--dataroot", "DATA", "--checkpoints_dir", "FILE"],
])
def test_outputs_and_sizes_are_checked_before_the_work(sample_data, tmp_path, capsys, command):
    (tmp_path / "file").write_text("a file, not a folder")
    args = [str(tmp_path / "file") + a[4:] if a.startswith("FILE") else str(sample_data["unaligned"]) if a == "DATA"
            else a for a in command]
    assert main(args) == 2
    one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_resuming_a_state_without_an_optimizer_is_one_line(trained, capsys):
    ckpt, data = trained
    path = ckpt / "t" / "latest_state.pt"
    state = torch.load(path, weights_only=True)
    del state["optimizers"]["D"]
    atomic_save(state, path)  # a consistent file (checksum and all), just incomplete
    assert main(tiny_args(data, ckpt, max_iters=2, continue_train=True)) == 2
    one_line_error(capsys, "has no optimizers D")


def as_nobody() -> list[str] | None:
    """The command prefix that runs as the unprivileged user `nobody` (root ignores permission bits), or None."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    ok = subprocess.run([*prefix, sys.executable, "-c", "import gantk"], capture_output=True, cwd="/")
    return prefix if ok.returncode == 0 else None


@pytest.mark.skipif(as_nobody() is None, reason="needs root (to switch to `nobody`), setpriv and a world-readable "
                                               "checkout: root may write anywhere, so only another user can test this")
def test_unwritable_outputs_are_refused_in_one_line_before_any_work():
    """Run as `nobody` against a root-owned 0755 folder: train, translate, export and eval refuse in one line
    naming the option and the folder, and create nothing."""
    ro = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        g = ro / "latest_net_G.pth"
        torch.save(define_G(3, 3, 4, "resnet_6blocks").state_dict(), g)
        photo = ro / "in.png"
        Image.new("RGB", (40, 40), (90, 120, 150)).save(photo)
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        before = sorted(ro.rglob("*"))
        cases = {
            ("--checkpoints_dir/--name", "is not writable"): ["train", "--dataroot", str(ro), "--checkpoints_dir",
                                                              str(ro), "--name", "new"],
            ("--output", "is not writable"): ["translate", "--weights", str(g), "--netG", "resnet_6blocks", "--ngf", "4",
                                              "--input", str(photo), "--output", str(ro / "out")],
            ("--out", "cannot create folders in"): ["export", "--weights", str(g), "--netG", "resnet_6blocks", "--ngf",
                                                    "4", "--format", "onnx", "--out", str(ro / "exp_onnx")],
            ("--out", "is not writable"): ["eval", "--results", str(ro), "--reference", str(ro), "--paired"],
        }
        for (option, words), args in cases.items():
            proc = subprocess.run([*as_nobody(), sys.executable, "-m", "gantk", *args], capture_output=True, text=True,
                                  cwd="/", env={**os.environ, "HOME": str(ro)}, timeout=120)
            err = proc.stderr.strip()
            assert proc.returncode == 2 and err.startswith("gantk: error:") and "\n" not in err, (args[0], err)
            assert option in err and words in err and str(ro) in err, (args[0], err)
        assert sorted(ro.rglob("*")) == before
    finally:
        shutil.rmtree(ro)
