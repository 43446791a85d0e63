"""Shared building blocks; every model family builds from these."""
from gantk.nn.inference import prepare_for_inference
from gantk.nn.layers import get_norm_layer, init_weights, set_requires_grad, uses_bias
from gantk.nn.generators import ResnetBlock, ResnetGenerator, UnetGenerator, UnetSkipConnectionBlock
from gantk.nn.discriminators import NLayerDiscriminator, PixelDiscriminator
from gantk.nn.losses import GANLoss

__all__ = [
    "get_norm_layer", "init_weights", "prepare_for_inference", "set_requires_grad", "uses_bias",
    "ResnetBlock", "ResnetGenerator", "UnetGenerator", "UnetSkipConnectionBlock",
    "NLayerDiscriminator", "PixelDiscriminator", "GANLoss",
]
