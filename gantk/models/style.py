"""Feed-forward style transfer (Johnson et al. 2016): the transformer network, its training step
with the VGG perceptual loss, and loading of pytorch/examples `fast_neural_style` checkpoints.

Recipe as the PyTorch example: Adam lr 1e-3, batch 4, 2 epochs, photos scaled to 256 px (shorter
side) and centre-cropped, content weight 1e5 at relu2_2, style weight 1e10 at relu1_2, relu2_2,
relu3_3, relu4_3, Gram / (C*H*W), MSE. The example uses VGG16; gantk has VGG19 only and uses the
layers of the same names there (`features` 3, 8, 15, 24), so the loss scale differs slightly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from gantk.checkpoints import generator_state, load_state_dict_checked, read_checkpoint
from gantk.config import TrainConfig, opt
from gantk.data.datasets import SingleDataset
from gantk.errors import GantkError
from gantk.io import load_image, pil_to_tensor
from gantk.models.base import BaseModel
from gantk.nn.vgg import check_layers, content_loss, gram_matrix, load_vgg19, min_input_size, resolve_vgg_weights, style_loss


class ConvLayer(nn.Module):
    """[nearest upsampling to a given size], reflection pad k//2, conv; keys `conv2d.*` as in the example."""

    def __init__(self, in_c: int, out_c: int, k: int, stride: int = 1):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(k // 2)
        self.conv2d = nn.Conv2d(in_c, out_c, k, stride)

    def forward(self, x, size=None):
        if size is not None:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """x + IN(conv(relu(IN(conv(x))))), 3x3 reflect-padded convs, affine InstanceNorm."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class TransformerNet(nn.Module):
    """Images in [-1, 1], NCHW, any size -> stylised images of the same size, about [-1, 1] (not clamped).

    Layout and state-dict keys are those of pytorch/examples' TransformerNet, which works on 0..255
    pixels; the input is mapped to 0..255 and the output back, so its checkpoints load unchanged.
    The decoder upsamples to the encoder's sizes, so odd sizes come back whole (for sizes divisible by 4
    this is the example's 2x nearest upsampling).
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3 = ResidualBlock(128), ResidualBlock(128), ResidualBlock(128)
        self.res4, self.res5 = ResidualBlock(128), ResidualBlock(128)
        self.deconv1, self.in4 = ConvLayer(128, 64, 3), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = ConvLayer(64, 32, 3), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9)

    def forward(self, x):
        y1 = F.relu(self.in1(self.conv1((x + 1) * 127.5)))
        y2 = F.relu(self.in2(self.conv2(y1)))
        y = F.relu(self.in3(self.conv3(y2)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = F.relu(self.in4(self.deconv1(y, y2.shape[-2:])))
        y = F.relu(self.in5(self.deconv2(y, y1.shape[-2:])))
        return self.deconv3(y) / 127.5 - 1


def load_transformer(path: str | Path) -> TransformerNet:
    """A TransformerNet in eval mode from a gantk fast_style checkpoint (latest_state.pt or
    <epoch>_net_G.pth) or a pytorch/examples fast_neural_style `.pth`/`.model` state dict
    (old InstanceNorm running_mean/var keys are dropped)."""
    sd, _ = generator_state(read_checkpoint(path), "G", str(path))
    return load_state_dict_checked(TransformerNet(), sd, str(path)).eval()


def fit_size(img: Image.Image, max_side: int) -> Image.Image:
    """Scale down (never up) so the longer side is at most `max_side` px (0: unchanged)."""
    scale = max_side / max(img.size) if max_side else 1.0
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def load_batch(path: str | Path, max_side: int = 0, device="cpu") -> torch.Tensor:
    """An image file as a 1x3xHxW tensor in [-1, 1], longer side at most `max_side` px (0: as is)."""
    return pil_to_tensor(fit_size(load_image(path), max_side)).unsqueeze(0).to(device)


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """Shorter side scaled to `size`, then the centre size x size square (the example's transform)."""
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class PhotoDataset(SingleDataset):
    """A folder of photos (searched recursively), each scaled and centre-cropped to --image_size."""

    def __init__(self, cfg, phase: str = "train"):
        super().__init__(cfg, phase, train=True)

    def get(self, index):
        path = self.A_paths[index]
        return {"A": pil_to_tensor(centre_square(load_image(path), self.cfg.image_size)), "A_paths": str(path)}


@dataclass
class FastStyleConfig(TrainConfig):
    MODEL = "fast_style"
    dataroot: str = opt("", "a folder of photos (e.g. datasets/photo2vintage/trainA), searched recursively")
    dataset_mode: str = opt("single", "data layout (fast_style reads one folder of photos)", ("single",))
    style: str = opt("", "the style image file")
    vgg_weights: str = opt("", "torchvision VGG19 weights (vgg19-dcbb9e9d.pth); default $GANTK_VGG19; "
                               "'random' is a test/debug switch")
    image_size: int = opt(256, "photos: shorter side scaled to this, then the centre square")
    style_size: int = opt(0, "style image: longer side scaled down to this (0: its own size)")
    content_weight: float = opt(1e5, "weight of the content (feature) loss")
    style_weight: float = opt(1e10, "weight of the style (Gram) loss")
    content_layer: str = opt("relu2_2", "VGG19 layer of the content loss")
    style_layers: str = opt("relu1_2,relu2_2,relu3_3,relu4_3", "VGG19 layers of the style loss, comma-separated")
    batch_size: int = opt(4, "input batch size (per process under torchrun)")
    lr: float = opt(1e-3, "Adam learning rate")
    beta1: float = opt(0.9, "Adam beta1 (the example uses Adam's defaults)")
    n_epochs: int = opt(2, "epochs at the initial learning rate")
    n_epochs_decay: int = opt(0, "epochs of linear decay to zero")
    display_freq: int = opt(400, "save a sample grid every this many images")

    @property
    def style_layer_list(self) -> list[str]:
        return [n.strip() for n in self.style_layers.split(",") if n.strip()]


class FastStyleModel(BaseModel):
    """G: the transformer network, trained to minimise the VGG19 perceptual loss against one style."""

    Config = FastStyleConfig
    net_names = ("G",)
    loss_names = ("content", "style")
    visual_rows = (("real", "stylized"),)

    @classmethod
    def check_config(cls, cfg: FastStyleConfig) -> None:
        if not cfg.style:
            raise GantkError("--style is required: the style image file")
        if not Path(cfg.style).is_file():
            raise GantkError(f"--style {cfg.style}: no such file")
        resolve_vgg_weights(cfg.vgg_weights, "--vgg_weights")
        layers = check_layers(cfg.style_layer_list, "--style_layers") + check_layers([cfg.content_layer], "--content_layer")
        if cfg.image_size < min_input_size(layers):
            raise GantkError(f"--image_size {cfg.image_size}: these VGG19 layers need at least {min_input_size(layers)} px")
        if cfg.style_size < 0 or cfg.content_weight < 0 or cfg.style_weight < 0:
            raise GantkError("--style_size, --content_weight and --style_weight must be >= 0")

    @classmethod
    def make_dataset(cls, cfg: FastStyleConfig, phase: str):
        return PhotoDataset(cfg, phase)

    def __init__(self, cfg: FastStyleConfig, device="cpu", rank=0, world_size=1):
        super().__init__(cfg, device, rank, world_size)
        self.nets = {"G": TransformerNet()}  # PyTorch default init, as the example
        self.optimizers = {"G": self.adam("G")}
        self.vgg = load_vgg19(cfg.vgg_weights, self.device, "--vgg_weights")
        if cfg.channels_last:
            self.vgg.to(memory_format=torch.channels_last)
        style = load_batch(cfg.style, cfg.style_size, self.device)
        with torch.no_grad(), self.precision.autocast():
            feats = self.vgg(self.vgg.normalize(style), cfg.style_layer_list)
        self.style_grams = {k: gram_matrix(f) for k, f in feats.items()}

    def set_input(self, batch):
        self.real = self.to_input(batch["A"])

    def optimize_parameters(self):
        c, L, vgg = self.cfg, self.losses, self.vgg
        opt_G = self.optimizers["G"]
        opt_G.zero_grad(set_to_none=True)
        with self.precision.autocast():
            self.stylized = self.fwd["G"](self.real)
            feats = vgg(vgg.normalize(self.stylized), [*c.style_layer_list, c.content_layer])
            with torch.no_grad():
                target = vgg(vgg.normalize(self.real), [c.content_layer])[c.content_layer]
        L["content"] = c.content_weight * content_loss(feats[c.content_layer], target)
        L["style"] = c.style_weight * style_loss(feats, self.style_grams)
        self.precision.backward(L["content"] + L["style"])
        self.precision.step(opt_G)
        self.precision.update()
