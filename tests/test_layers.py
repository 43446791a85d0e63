"""Given the source tree, every gantk import (top-level or inside a function) points down the layer map
of the README: a module imports its own unit or a lower layer, never a unit beside or above it."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the installed package name -> folder (pyproject's package-dir mapping)
FOLDERS = {"gantk": ROOT / "gantk", "gantk.kernels": ROOT / "kernels", "gantk.export": ROOT / "export"}
LAYERS = [
    ("gantk.errors",),
    ("gantk.io", "gantk.runtime", "gantk.checkpoints"),  # files, devices and CPU facts, checkpoint files
    ("gantk.kernels",),                        # ops only: Triton and C kernels, custom ops, autograd
    ("gantk.nn", "gantk.data"),
    ("gantk.metrics",),                        # PSNR/SSIM/MAE, FID/KID on extracted features
    ("gantk.acceleration",),                   # the speed-option vocabulary and every module swap
    ("gantk.config",),                         # option dataclasses, choice lists
    ("gantk.models",),                         # families: registry, generator loader, training steps
    ("gantk.train", "gantk.translate", "gantk.evaluate", "gantk.stylize", "gantk.export"),
    ("gantk.bench", "gantk.serve"),             # run exported artifacts: benchmarks, a Triton endpoint
    ("gantk.cli",),
    ("gantk.__main__",),
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """The layer-map unit a dotted module name belongs to (its longest listed prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER:
            return ".".join(parts[:n])
    raise KeyError(module)


def modules():
    """(dotted name, file) of every gantk source file."""
    for pkg, folder in FOLDERS.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder).with_suffix("").parts
            if pkg == "gantk" and rel[0] in ("kernels", "export"):
                continue
            name = ".".join((pkg, *rel)).removesuffix(".__init__")
            if name != "gantk":
                yield name, f


def gantk_imports(name: str, path: Path):
    """(line, imported module) for each gantk import in the file, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] if base != "gantk" else [f"gantk.{a.name}" for a in node.names]
        else:
            continue
        yield from ((node.lineno, t) for t in targets if t == "gantk" or t.startswith("gantk."))


def test_every_module_is_on_the_map():
    unmapped = [name for name, _ in modules() if not any(name == u or name.startswith(u + ".") for u in LAYER)]
    assert not unmapped, f"add these to the layer map (README 'Layout' and LAYERS here): {unmapped}"


def test_imports_point_down():
    upward = []
    for name, path in modules():
        own = unit_of(name)
        for line, target in gantk_imports(name, path):
            if target == "gantk":
                continue  # the package root holds only __version__
            other = unit_of(target)
            if other != own and LAYER[other] >= LAYER[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} {own} -> {target}")
    assert not upward, "imports that point sideways or up the layer map:\n" + "\n".join(upward)


@pytest.mark.parametrize("unit", ["gantk.kernels"])
def test_kernels_import_only_errors_and_runtime(unit):
    allowed = {"gantk.errors", "gantk.runtime", unit}
    bad = [f"{p.relative_to(ROOT)}:{line} {t}" for n, p in modules() if unit_of(n) == unit
           for line, t in gantk_imports(n, p) if unit_of(t) not in allowed]
    assert not bad, bad
