#!/usr/bin/env bash
# GPU throughput of ingest, decode on the CPU vs the GPU, ViT-B/32 and ViT-L/14 shapes: one table (bench/gpu.py).
#
#   bash bench/gpu.sh            # on a GPU machine, from a fresh checkout: about 4-6 minutes
#   bash bench/gpu.sh --smoke    # tiny models and rows, on any machine (a minute on 2 CPU cores)
#
# The machine may have no network: the script uses the torch installed there (never installs one), installs
# mmindex itself only if it is not importable (pip, offline first), and runs the GPU decode rows only when
# torchvision imports (else it prints why and skips them). With OUT set, the output is also written to
# $OUT/gpu-bench.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"  # PYTHON=/path/to/venv/bin/python picks another
if ! "$PYTHON" -c 'import torch' 2>/dev/null && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
log="${OUT:+$OUT/gpu-bench.txt}"
say() { if [ -n "$log" ]; then echo "$@" | tee -a "$log"; else echo "$@"; fi; }
[ -n "$log" ] && : > "$log"

if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  say "no torch importable by $PYTHON: install the torch build for this machine's CUDA first (this script never does)"
  exit 1
fi
if ! "$PYTHON" -c 'import mmindex.pipeline.ingest.gpu_decode' 2>/dev/null; then
  say "mmindex is not installed for $PYTHON: pip install -e . (without network: only if its dependencies are there)"
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 \
    || "$PYTHON" -m pip install -q -e . >/dev/null 2>&1 \
    || { say "could not install mmindex (no network, and its dependencies are missing?)"; exit 1; }
  missing=$("$PYTHON" - <<'EOF'
import importlib
names = ["sentence_transformers", "transformers", "qdrant_edge", "pyarrow", "PIL", "click", "numpy"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
EOF
)
  if [ -n "$missing" ]; then say "missing packages mmindex needs: $missing"; exit 1; fi
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -n "$log" ]; then
  "$PYTHON" bench/gpu.py "$@" 2>&1 | tee -a "$log"
else
  "$PYTHON" bench/gpu.py "$@"
fi
