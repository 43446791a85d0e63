"""What a person reads: the loss log, sample grids and an index.html that shows them."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from gantk.io import image_grid, save_image


class Reporter:
    """Writes loss_log.txt (human), losses.jsonl (machine) and web/ (sample grids + index.html)."""

    def __init__(self, folder: Path, title: str, header: str = ""):
        self.folder = Path(folder)
        self.web = self.folder / "web"
        (self.web / "images").mkdir(parents=True, exist_ok=True)
        self.title = title
        self.log_path = self.folder / "loss_log.txt"
        with open(self.log_path, "a") as f:
            f.write(f"================ Training loss ({time.strftime('%c')}) ================\n{header}\n")
        self.samples: list[tuple[str, str]] = []
        index = self.web / "samples.json"
        if index.exists():
            self.samples = [tuple(s) for s in json.loads(index.read_text())]

    def log_losses(self, epoch: int, iters: int, t_comp: float, t_data: float, losses: dict, lr: float) -> str:
        msg = f"(epoch: {epoch}, iters: {iters}, time: {t_comp:.3f}, data: {t_data:.3f}, lr: {lr:.6f}) "
        msg += " ".join(f"{k}: {v:.3f}" for k, v in losses.items())
        with open(self.log_path, "a") as f:
            f.write(msg + "\n")
        with open(self.folder / "losses.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, "iters": iters, "time": t_comp, "lr": lr, **losses}) + "\n")
        return msg

    def save_samples(self, epoch: int, iters: int, visuals: dict, rows: list[list[str]]) -> Path | None:
        """One grid: each row a list of visual names (first image of the batch)."""
        name = f"epoch{epoch:03d}_iter{iters:07d}.png"
        if any(n == name for n, _ in self.samples):
            return self.web / "images" / name
        cells = [r for r in ([visuals[n][0] for n in row if n in visuals] for row in rows) if r]
        if not cells:  # nothing computed yet (e.g. resumed exactly at an epoch's end)
            return None
        grid = image_grid(cells)
        path = save_image(grid, self.web / "images" / name)
        labels = " | ".join(", ".join(n for n in row if n in visuals) for row in rows)
        self.samples.append((name, f"epoch {epoch}, iteration {iters}: {labels}"))
        (self.web / "samples.json").write_text(json.dumps(self.samples))
        self.write_index()
        return path

    def write_index(self) -> None:
        items = "\n".join(f'<h3>{html.escape(cap)}</h3>\n<img src="images/{html.escape(n)}">'
                          for n, cap in reversed(self.samples))
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>body{{font-family:sans-serif}} img{{image-rendering:pixelated;max-width:100%}}</style>"
                f"</head><body><h1>{html.escape(self.title)}</h1>"
                f"<p>Newest first. Loss log: <a href='../loss_log.txt'>loss_log.txt</a></p>\n{items}\n</body></html>")
        (self.web / "index.html").write_text(page)
