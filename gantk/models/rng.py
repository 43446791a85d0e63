"""A model-owned random stream, so training-time draws (dropout masks, latent codes) resume exactly."""
from __future__ import annotations

import contextlib

import torch


class RandomStream:
    """Inside `with stream.active():` the global RNG (CPU, and this device's CUDA generator) runs from
    this stream's own state; outside, the global state is as before. Save `state` with the training
    state: other users of the global RNG (e.g. a DataLoader drawing a seed whenever an epoch's iterator
    starts, also after a resume) then cannot shift the stream."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.cuda:
            self.state["cuda"] = torch.Generator(self.device).manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self):
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            torch.set_rng_state(self.state["cpu"])
            if self.cuda:
                torch.cuda.set_rng_state(self.state["cuda"], self.device)
            yield
            self.state = {"cpu": torch.get_rng_state()}
            if self.cuda:
                self.state["cuda"] = torch.cuda.get_rng_state(self.device)
