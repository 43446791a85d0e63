#!/usr/bin/env bash
# Install (if needed) and run the test suite. Without arguments, the serving tests run first in .venv-serve
# (nvidia-pytriton pins numpy<2, scripts/install_serve.sh), then the whole suite in .venv (where they skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "$#" -eq 0 ]; then
  bash scripts/install_serve.sh
  .venv-serve/bin/python -m pytest -q -p no:cacheprovider tests/test_serve.py
fi
exec .venv/bin/python -m pytest -q "$@"
