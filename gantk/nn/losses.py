"""GAN objectives: lsgan (MSE), vanilla (BCE with logits), wgangp (mean critic score)."""
from __future__ import annotations

import torch
import torch.nn as nn

from gantk.errors import GantkError

GAN_MODES = ("lsgan", "vanilla", "wgangp")


class GANLoss(nn.Module):
    """loss(prediction, target_is_real) against a label map of the prediction's shape (1.0 real, 0.0 fake)."""

    def __init__(self, gan_mode: str, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise GantkError(f"--gan_mode {gan_mode!r}: expected one of {', '.join(GAN_MODES)}")
        self.gan_mode = gan_mode
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))
        self.loss = {"lsgan": nn.MSELoss(), "vanilla": nn.BCEWithLogitsLoss()}.get(gan_mode)

    def forward(self, prediction: torch.Tensor | list, target_is_real: bool) -> torch.Tensor:
        if isinstance(prediction, (list, tuple)):  # multi-scale discriminators: sum over the scales
            return sum(self(p, target_is_real) for p in prediction)
        prediction = prediction.float()  # losses in fp32 under autocast
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        label = self.real_label if target_is_real else self.fake_label
        return self.loss(prediction, label.to(prediction.device).expand_as(prediction))
