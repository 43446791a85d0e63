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

from gantk.config import TrainConfig, opt
from gantk.data.photos import PhotoDataset, load_batch
from gantk.errors import GantkError
from gantk.models.base import GENERATOR, BaseModel
from gantk.nn.transformer import TransformerNet
from gantk.nn.vgg import check_layers, content_loss, gram_matrix, load_vgg19, min_input_size, resolve_vgg_weights, style_loss


def load_transformer(path: str | Path) -> TransformerNet:
    """A TransformerNet in eval mode from a gantk fast_style checkpoint (latest_state.pt or
    <epoch>_net_G.pth) or a pytorch/examples fast_neural_style `.pth`/`.model` state dict
    (old InstanceNorm running_mean/var keys are dropped)."""
    from gantk.models.loading import load_generator
    return load_generator(path, "G", "fast_style")


@dataclass
class FastStyleConfig(TrainConfig):
    MODEL = "fast_style"
    dataroot: str = opt("", "a folder of photos (e.g. datasets/photo2vintage/trainA), searched recursively")
    style: str = opt("", "the style image file")
    vgg_weights: str = opt("", "torchvision VGG19 weights (vgg19-dcbb9e9d.pth); default $GANTK_VGG19; "
                               "'random' is a test/debug switch")
    image_size: int = opt(256, "photos: shorter side scaled to this, then the centre square", min=1)
    style_size: int = opt(0, "style image: longer side scaled down to this (0: its own size)", min=0)
    content_weight: float = opt(1e5, "weight of the content (feature) loss", min=0)
    style_weight: float = opt(1e10, "weight of the style (Gram) loss", min=0)
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
    roles = {"G": GENERATOR}
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
