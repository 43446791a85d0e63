"""The FID Inception-v3: pytorch-fid's network, 2048-d pool3 features of images in [-1, 1].

Module names follow torchvision's Inception3 as pytorch-fid patches it (`FIDInceptionA/C/E_1/E_2` blocks;
`Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.running_mean`, ... `Mixed_7c.branch_pool.bn.bias`, `fc.weight`),
so pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (ported from the TensorFlow graph of the FID paper)
loads unchanged. No weights ship with gantk: the file is given by the user (`--inception-weights` or
$GANTK_INCEPTION); `"random"` is a seeded random network for tests (numbers meaningless).
`feature_extractor` runs it through a backend: torch (channels_last, inference mode) or OpenVINO (CPU, fp32).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gantk.checkpoints import load_state_dict_checked, read_checkpoint
from gantk.errors import GantkError
from gantk.runtime import optional_module, require_module
from gantk.nn.weights import RANDOM_WEIGHTS, resolve_weights, seeded_random_init

log = logging.getLogger("gantk.inception")

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
WEIGHTS_ENV = "GANTK_INCEPTION"
INPUT_SIZE = 299
FEATURE_DIM = 2048
BACKENDS = ("auto", "torch", "openvino")  # auto: OpenVINO on CPU when installed, else torch


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 0.001) + ReLU, keys `conv.*`, `bn.*`."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    """The TF graph's 3x3 average pool: padding not counted (pytorch-fid's change to torchvision)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (`max_pool=False`: FIDInceptionE_1, average pool) and Mixed_7c (FIDInceptionE_2, max pool)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        dbl = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, dbl, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to pool3: images in [-1, 1] (any size) -> (N, 2048) features.
    Inputs of another size are resized to 299 x 299 (bilinear, align_corners=False, no antialiasing) as
    pytorch-fid does; 299 x 299 inputs (e.g. resized beforehand by clean-fid's protocol) pass unchanged.
    `fc` (1008 classes) is kept only so that the published file loads strictly; it is not run."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_299(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resize_299(x: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's in-network resize to 299 x 299 (bilinear, align_corners=False); 299 x 299 stays as it is."""
    if tuple(x.shape[-2:]) == (INPUT_SIZE, INPUT_SIZE):
        return x
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """"torch" or "openvino" for `backend` (one of BACKENDS) on `device`; a one-line error for openvino when it
    cannot run there."""
    if backend not in BACKENDS:
        raise GantkError(f"--fid-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "openvino" if cpu and _openvino() is not None else "torch"
    if backend == "openvino" and not cpu:
        raise GantkError(f"--fid-backend openvino runs on the CPU, not on {device}; use --fid-backend torch")
    if backend == "openvino":
        require_module("openvino", "--fid-backend openvino")
    return backend


def _openvino():
    """The openvino module, or None (benchmarks/fid.py asks too)."""
    return optional_module("openvino")


def openvino_ir_path(cache: str | Path, weights_sha256: str) -> Path:
    """Where the OpenVINO conversion of the network with these weights is kept in a cache folder."""
    version = _openvino().__version__.split("-")[0]  # "2026.4.1-22982-e213a14-releases/2026/4": the release
    return Path(cache) / "openvino" / f"fid_inception-{weights_sha256[:16]}-ov{version}.xml"


def feature_extractor(net: FIDInceptionV3, backend: str = "torch", ir_path: str | Path | None = None
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """NCHW images in [-1, 1] -> (N, 2048) features through `backend` (`resolve_backend`'s answer): torch runs
    `net` in channels_last under inference mode; openvino compiles it for the CPU in fp32 (the converted model
    is kept at `ir_path`, an .xml, and read from there next time). Both resize inputs as `resize_299` first."""
    if backend == "torch":
        cpu = next(net.parameters(), torch.empty(0)).device.type == "cpu"
        fmt = torch.channels_last if cpu else torch.contiguous_format
        net = net.to(memory_format=fmt)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return net(resize_299(x).contiguous(memory_format=fmt))
        return run
    ov = _openvino()
    core = ov.Core()
    if ir_path is not None and Path(ir_path).is_file():
        model = core.read_model(str(ir_path))
    else:
        with torch.inference_mode():
            model = ov.convert_model(net.cpu(), example_input=torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
        if ir_path is not None:  # a temp name, renamed once both files are written
            ir_path = Path(ir_path)
            ir_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = ir_path.with_name(f".{ir_path.stem}.{os.getpid()}.tmp.xml")
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), ir_path.with_suffix(".bin"))
            os.replace(tmp, ir_path)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run_ov(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled(resize_299(x).numpy())[0])
    return run_ov


def resolve_inception_weights(weights: str | None, option: str = "--inception-weights") -> str:
    """The weights file from `weights`, else $GANTK_INCEPTION; a one-line error naming the option."""
    return resolve_weights(weights, option, WEIGHTS_ENV, FID_WEIGHTS_URL, "Inception weights for FID/KID")


def load_fid_inception(weights: str | None = None, device="cpu", option: str = "--inception-weights"
                       ) -> FIDInceptionV3:
    """A frozen FIDInceptionV3 in eval mode from pytorch-fid's file (or $GANTK_INCEPTION); `"random"`: seeded
    random weights (Kaiming-normal convolutions, so activations keep their scale), for tests only."""
    source = resolve_inception_weights(weights, option)
    net = FIDInceptionV3()
    if source == RANDOM_WEIGHTS:
        log.warning("Inception is randomly initialised (test switch %r): FID/KID values are meaningless",
                    RANDOM_WEIGHTS)
        seeded_random_init(net)  # Kaiming-normal convolutions, so activations keep their scale
    else:
        sd = read_checkpoint(source)
        own = net.state_dict()  # files saved before BatchNorm counted its batches have no num_batches_tracked
        sd.update({k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in sd})
        load_state_dict_checked(net, sd, source, f" (expected pytorch-fid's Inception weights: {FID_WEIGHTS_URL})")
    return net.eval().requires_grad_(False).to(device)
