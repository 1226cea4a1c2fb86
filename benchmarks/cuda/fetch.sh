#!/usr/bin/env bash
# Gather, on a machine that reaches PyPI, what benchmarks/cuda/run.sh installs on a CUDA host
# that reaches nothing: the pure-Python wheels of mmengine and mmdet, the few small packages a
# stock PyTorch image lacks, compiled ones for that host's Python, and mmcv's source (its CUDA
# ops are built there, for that GPU alone).
#
#   benchmarks/cuda/fetch.sh                 # into benchmarks/cuda/bundle/, for Python 3.12
#   PYVER=3.11 benchmarks/cuda/fetch.sh
#
# The pins are the project's (pyproject.toml, scripts/setup.sh). Everything else the
# benchmarks import (torch, numpy, scipy, matplotlib, opencv, pyyaml, rich, tqdm, pillow) is
# expected on the host, as a PyTorch image has it.
set -euo pipefail
cd "$(dirname "$0")"
PYVER=${PYVER:-3.12}
BUNDLE=bundle
# mmcv's sdist runs its setup.py (which imports torch) to read its metadata: the project's venv
PY=../../.venv/bin/python
[[ -x $PY ]] || { echo "fetch.sh: run 'make setup' first (needs $PY)" >&2; exit 1; }
mkdir -p "$BUNDLE"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$BUNDLE" \
    mmengine==0.10.7 mmdet==3.3.0 addict yapf platformdirs termcolor terminaltables \
    pycocotools shapely "setuptools<81"
# mmcv 2.1.0 publishes only its source for these pins.
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$BUNDLE" mmcv==2.1.0
ls -la "$BUNDLE"
du -sh "$BUNDLE"
