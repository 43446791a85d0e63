"""What a person reads: the loss log, sample grids, held-out scores and an index.html that shows them; the
same in a TensorBoard log on request."""
from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

from gantk.config import EVAL_DIRECTIONS
from gantk.io import image_grid, save_image
from gantk.runtime import require_module

log = logging.getLogger("gantk.train")
EVAL_LOG, EVAL_CURVE = "eval.jsonl", "eval_curve.png"


def require_tensorboard() -> None:
    """One-line error when --tensorboard is given without the tensorboard package."""
    require_module("tensorboard", "--tensorboard")


class Reporter:
    """Writes loss_log.txt (human), losses.jsonl and eval.jsonl (machine), web/ (sample grids, the held-out
    score curve, index.html) and, with `tensorboard`, an event log in tensorboard/ (steps: iterations;
    `start_iters`: where a resumed run goes on, later events of the earlier run are dropped)."""

    def __init__(self, folder: Path, title: str, header: str = "", tensorboard: bool = False, start_iters: int = 0):
        self.folder = Path(folder)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # TensorBoard drops the earlier events from the first step this run logs on
            self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=start_iters + 1)
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

    def log_losses(self, epoch: int, iters: int, t_comp: float, t_data: float, losses: dict, lr: float,
                   lrs: dict | None = None) -> str:
        """One line of losses; `lrs`: every optimizer's learning rate by name (TensorBoard)."""
        if self.writer:
            for k, v in losses.items():
                self.writer.add_scalar(f"loss/{k}", v, iters)
            for k, v in (lrs or {"lr": lr}).items():
                self.writer.add_scalar(f"lr/{k}", v, iters)
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
        if self.writer:
            self.writer.add_image("samples", ((grid + 1) / 2).clamp(0, 1), iters)
        labels = " | ".join(", ".join(n for n in row if n in visuals) for row in rows)
        self.samples.append((name, f"epoch {epoch}, iteration {iters}: {labels}"))
        (self.web / "samples.json").write_text(json.dumps(self.samples))
        self.write_index()
        return path

    def log_eval(self, row: dict) -> None:
        """Append a held-out evaluation (a row of `Evaluator.evaluate`) to eval.jsonl, TensorBoard and the curve."""
        with open(self.folder / EVAL_LOG, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer:
            for k in EVAL_DIRECTIONS:
                if k in row:
                    self.writer.add_scalar(f"eval/{k}", row[k], row["iters"])
            self.writer.flush()
        self.plot_eval()
        self.write_index()

    def eval_rows(self) -> list[dict]:
        path = self.folder / EVAL_LOG
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def trim_eval(self, iters: int) -> None:
        """Keep the evaluations up to `iters` (where a resumed run goes on; 0 for a new run: none) and redraw."""
        rows = [r for r in self.eval_rows() if r["iters"] <= iters]
        if (self.folder / EVAL_LOG).is_file():
            (self.folder / EVAL_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
        (self.web / EVAL_CURVE).unlink(missing_ok=True)
        if rows:
            self.plot_eval()

    def plot_eval(self) -> None:
        """web/eval_curve.png: each metric of eval.jsonl by epoch, the chosen one's best marked (matplotlib)."""
        try:
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            log.warning("matplotlib is not installed: no %s (the values are in %s)", EVAL_CURVE, EVAL_LOG)
            return
        rows = self.eval_rows()
        names = [k for k in EVAL_DIRECTIONS if any(k in r for r in rows)]
        fig = Figure(figsize=(3.6 * len(names), 3))
        for i, name in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            ax.plot([r["epoch"] for r in rows if name in r], [r[name] for r in rows if name in r], marker="o")
            best = [r for r in rows if r["best"] and r["metric"] == name]
            if best:
                ax.plot([best[-1]["epoch"]], [best[-1][name]], "r*", markersize=12, label="best")
                ax.legend()
            ax.set_title(f"{name} ({'higher' if EVAL_DIRECTIONS[name] else 'lower'} is better)")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        fig.savefig(self.web / EVAL_CURVE, dpi=80)

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    def write_index(self) -> None:
        items = "\n".join(f'<h3>{html.escape(cap)}</h3>\n<img src="images/{html.escape(n)}">'
                          for n, cap in reversed(self.samples))
        if (self.web / EVAL_CURVE).is_file():
            items = (f"<h2>Held-out evaluation (<a href='../{EVAL_LOG}'>{EVAL_LOG}</a>)</h2>\n"
                     f"<img src='{EVAL_CURVE}'>\n<h2>Samples</h2>\n{items}")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>body{{font-family:sans-serif}} img{{image-rendering:pixelated;max-width:100%}}</style>"
                f"</head><body><h1>{html.escape(self.title)}</h1>"
                f"<p>Newest first. Loss log: <a href='../loss_log.txt'>loss_log.txt</a></p>\n{items}\n</body></html>")
        (self.web / "index.html").write_text(page)
