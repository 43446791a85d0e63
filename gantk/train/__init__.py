"""The training engine: loop, checkpoints, logging, distributed set-up."""
from gantk.train.engine import train

__all__ = ["train"]
