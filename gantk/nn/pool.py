"""History of generated images (Shrivastava et al.): D sees a mix of current and past fakes."""
from __future__ import annotations

import torch


class ImagePool:
    """Returns each new image, or with probability 1/2 (once full) a stored one that it replaces."""

    def __init__(self, pool_size: int, seed: int = 0):
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.gen) > 0.5:
                i = int(torch.randint(0, self.pool_size, (1,), generator=self.gen))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.images = [t.to(device) for t in state["images"]]
        self.gen.set_state(state["rng"])
