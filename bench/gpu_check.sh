#!/usr/bin/env bash
# korag's embedding engine beside the reference raw bf16 figure, on a lent GPU machine, in one call.
#
# ../shared does not travel to the GPU machine, so first, here (in the repository root):
#     mkdir -p .korag/gpu && cp ../shared/data/autorag-ko/corpus.jsonl ../shared/bench/xlmr_reference.py .korag/gpu/
# then one device call (.korag/ is git-ignored, so it must be carried):
#     run(command="bash bench/gpu_check.sh", carry=[".korag/gpu"], timeout_s=540)
# REFERENCE=1 also runs the reference script itself afterwards (several minutes more: ST fp32/fp16
# rows and its own compile); the default compares against its raw bf16 loop run in the same process.
# CPU dry run of the script's logic: TINY=1 REPLICATE=1 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
CORPUS=.korag/gpu/corpus.jsonl
[ -f "$CORPUS" ] || CORPUS=../shared/data/autorag-ko/corpus.jsonl
export TOKENIZERS_PARALLELISM=true HF_HUB_OFFLINE=1
"$PY" -c 'import torch, transformers, sentence_transformers as s; print("torch", torch.__version__, "transformers", transformers.__version__, "sentence-transformers", s.__version__, "cuda", torch.cuda.is_available())'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
"$PY" bench/gpu_check.py "$CORPUS" 2>&1 | grep --line-buffered -v -E "Warning|warn\(|Loading weights"
if [ "${REFERENCE:-0}" = "1" ] && [ -f .korag/gpu/xlmr_reference.py ]; then
    "$PY" .korag/gpu/xlmr_reference.py "$CORPUS" 2>&1 | grep --line-buffered -v -E "Warning|warn\("
fi
