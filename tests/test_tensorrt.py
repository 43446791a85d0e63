"""TensorRT 10.x / 11.x gating without TensorRT: the trtexec command and script per version (the script run
against stand-in trtexec programs that print each version's banner), and the Python builder's network flags
and version checks against a stand-in `tensorrt` module that records what it is asked."""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gantk.errors import GantkError
from gantk.export.tensorrt import build_engine, profile_shapes, trtexec_command, trtexec_script

SHAPES = profile_shapes(["input"], 3, 0, (1, 2, 4), (8, 64, 128))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_strongly_typed_flag_only_for_tensorrt_10(precision):
    ten, eleven, unknown = (trtexec_command("m.onnx", "m.plan", SHAPES, precision, trt_major=v) for v in (10, 11, None))
    assert "--stronglyTyped" in ten.split() and "--noTF32" not in ten.split()
    assert "--stronglyTyped" not in eleven.split() and "--noTF32" not in eleven.split()
    assert unknown == ten  # needed on 10, ignored by 11: kept when the version is not known
    assert ten.replace(" --stronglyTyped", "") == eleven


def test_fp32_command_is_the_same_on_both_versions():
    ten, eleven = (trtexec_command("m.onnx", "m.plan", SHAPES, "fp32", "c.cache", v) for v in (10, 11))
    assert ten == eleven == ("trtexec --onnx=m.onnx --saveEngine=m.plan --minShapes=input:1x3x8x8 "
                             "--optShapes=input:2x3x64x64 --maxShapes=input:4x3x128x128 --noTF32 "
                             "--timingCacheFile=c.cache")


FAKE_TRTEXEC = """#!/bin/sh
if [ "$1" = "--help" ]; then
  echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] [b1] # trtexec --help"; exit 0
fi
echo "$@" > "$(dirname "$0")/args.txt"
"""


@pytest.mark.parametrize("version, strongly_typed", [("100300", True), ("110000", False)])
def test_script_picks_the_command_by_the_installed_trtexec(tmp_path, version, strongly_typed):
    """The written script run with a stand-in trtexec printing TensorRT 10.3's or 11.0's banner."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(FAKE_TRTEXEC.format(version=version))
    (bin_dir / "trtexec").chmod(0o755)
    script = tmp_path / "model.fp16.trtexec.sh"
    script.write_text(trtexec_script(tmp_path / "model.fp16.onnx", tmp_path / "model.fp16.plan", SHAPES, "fp16",
                                     "model.timing.cache"))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", str(script)], check=True, env=env, cwd="/")
    args = (bin_dir / "args.txt").read_text().split()
    assert args[:2] == ["--onnx=model.fp16.onnx", "--saveEngine=model.fp16.plan"]
    assert ("--stronglyTyped" in args) == strongly_typed and "--timingCacheFile=model.timing.cache" in args


def test_fp32_script_has_one_command(tmp_path):
    text = trtexec_script(tmp_path / "m.onnx", tmp_path / "m.plan", SHAPES, "fp32", None)
    assert "case" not in text and text.rstrip().endswith(trtexec_command("m.onnx", "m.plan", SHAPES, "fp32"))


def fake_tensorrt(version: str, cache_accepted: bool = True):
    """A stand-in `tensorrt` module with the API build_engine uses, recording the calls."""
    calls = {}

    class Config:
        def set_memory_pool_limit(self, pool, size): calls["workspace"] = size
        def clear_flag(self, flag): calls.setdefault("cleared", []).append(flag)
        def add_optimization_profile(self, profile): calls["profile"] = profile.shapes
        def create_timing_cache(self, blob): return types.SimpleNamespace(serialize=lambda: b"cache")
        def set_timing_cache(self, cache, ignore_mismatch): return cache_accepted
        def get_timing_cache(self): return types.SimpleNamespace(serialize=lambda: b"cache")

    class Profile:
        def __init__(self): self.shapes = {}
        def set_shape(self, name, lo, opt, hi): self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger): pass
        def create_network(self, flags): calls["network_flags"] = flags; return "network"
        def create_builder_config(self): return Config()
        def create_optimization_profile(self): return Profile()
        def build_serialized_network(self, network, config): return b"plan"

    class Logger:
        WARNING = 2
        def __init__(self, severity): pass

    class Parser:
        def __init__(self, network, logger): pass
        def parse_from_file(self, path): return True

    trt = types.SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"), BuilderFlag=types.SimpleNamespace(TF32="tf32"))
    return trt, calls


@pytest.mark.parametrize("version, precision, flags, cleared", [
    ("10.3.0", "fp16", 1 << 1, None), ("10.13.3", "bf16", 1 << 1, None), ("10.3.0", "fp32", 0, ["tf32"]),
    ("11.0.0", "fp16", 0, None), ("11.1.0", "bf16", 0, None), ("11.0.0", "fp32", 0, ["tf32"])])
def test_builder_asks_for_strong_typing_only_on_tensorrt_10(tmp_path, monkeypatch, version, precision, flags, cleared):
    trt, calls = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", SHAPES, precision,
                        timing_cache=tmp_path / "m.timing.cache")
    assert calls["network_flags"] == flags and calls.get("cleared") == cleared
    assert calls["profile"] == SHAPES and plan.read_bytes() == b"plan"
    assert (tmp_path / "m.timing.cache").read_bytes() == b"cache"


def test_unsupported_version_and_foreign_timing_cache_are_one_line_errors(tmp_path, monkeypatch):
    trt, calls = fake_tensorrt("9.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(GantkError, match=r"TensorRT 9\.3\.0 is installed; gantk supports 10\.x and 11\.x"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", SHAPES)
    assert "network_flags" not in calls  # refused before any work
    trt, _ = fake_tensorrt("11.0.0", cache_accepted=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "m.timing.cache"
    cache.write_bytes(b"from TensorRT 10")
    with pytest.raises(GantkError, match="m.timing.cache: a timing cache from another TensorRT version or GPU"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", SHAPES, timing_cache=cache)
    assert not Path(tmp_path / "m.plan").exists()
