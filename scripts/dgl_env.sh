#!/usr/bin/env bash
# A pinned DGL environment (torch 2.2.1: dgl 2.1.0 ships graphbolt builds for torch 2.0.0 ... 2.2.1 only) for the DGL import route (README, "Bring your own model"), separate from
# .venv: DGL 2.1.0's wheels load only with torch <= 2.2 (graphbolt), and sessionrec pins torch 2.13.
# Not part of setup.sh or CI: torch 2.2 on PyPI is the CUDA build (~750 MB, plus ~2.5 GB of nvidia-*
# wheels that `import torch` loads even on a CPU-only machine).
#
#     bash scripts/dgl_env.sh [DIR]        # default runs/dgl-env; prints DIR/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/dgl-env}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$DIR/bin/python" ] || "$PY" -m venv "$DIR"
"$DIR/bin/python" -m pip install --quiet --upgrade pip
# dgl 2.1.0 declares numpy, scipy, networkx, requests, tqdm, psutil; its graphbolt also imports torchdata
# , pandas and pydantic at `import dgl` without declaring them. numpy < 2: the torch 2.2 wheels were built against numpy 1.
# (No safetensors package: contrib/dgl/record.py writes the format itself.)
"$DIR/bin/python" -m pip install --quiet "torch==2.2.1" "numpy==1.26.4" "dgl==2.1.0" "torchdata==0.7.1" \
    "pandas==2.2.3" "pydantic>=2,<3" scipy networkx requests tqdm psutil pyyaml
"$DIR/bin/python" -c "import torch, dgl; print('torch', torch.__version__, 'dgl', dgl.__version__)"
echo "$DIR/bin/python"
