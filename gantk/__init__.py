"""gantk: train the classic image-to-image GANs and ship them fast."""

__version__ = "0.1.0"
