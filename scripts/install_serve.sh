#!/usr/bin/env bash
# Create .venv-serve for `gantk serve`: nvidia-pytriton pins numpy<2, so it gets its own environment that
# adds .venv's packages (torch, gantk, ...) behind its own (numpy 1.x, pytriton). Needs scripts/install.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || bash scripts/install.sh
[ -x .venv-serve/bin/python ] || "$PY" -m venv .venv-serve
site=$(.venv-serve/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
base=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$base')" > "$site/zz_gantk_base.pth"
.venv-serve/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv-serve/bin/python -m pip install -q "nvidia-pytriton; platform_system == 'Linux'" "numpy<2" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv-serve/bin/python -c "import numpy, pytriton, torch, gantk; print(f'serve env: numpy {numpy.__version__}, torch {torch.__version__}')"
