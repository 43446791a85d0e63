"""The MNIST GAN's MLPs (yunjey/pytorch-tutorial): plain Sequentials with the tutorial's keys (0, 2, 4)."""
from __future__ import annotations

import torch.nn as nn


def mlp_generator(latent_dim: int = 64, hidden: int = 256, side: int = 28) -> nn.Sequential:
    """z (N, latent_dim) -> images (N, 1, side, side) in [-1, 1]."""
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, side * side), nn.Tanh(), nn.Unflatten(1, (1, side, side)))


def mlp_discriminator(hidden: int = 256, side: int = 28) -> nn.Sequential:
    """Flattened images (N, side * side) -> real/fake logits (N, 1)."""
    return nn.Sequential(nn.Linear(side * side, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
