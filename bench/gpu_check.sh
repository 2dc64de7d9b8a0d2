#!/usr/bin/env bash
# One prepared GPU check (<= 6 minutes): training throughput and MFU of the TMoLE training step on
# 125M / 350M / 1B-parameter backbones built from a config, bf16 autocast, on whatever CUDA card
# python3 sees. Needs only the repository and python3 with CUDA torch, transformers, tokenizers,
# peft and pydantic (no network, no data, no params.yaml); on a bare GPU box without pydantic, put
# its wheels in .whl/ and they are installed from there (--no-index). Writes
# $OUT/train_throughput_gpu.json and $OUT/gpu_check.log; exits 0 without a figure when there is no
# CUDA torch.
#
#   OUT=/tmp/out bash bench/gpu_check.sh
set -u
OUT=${OUT:-reports/bench}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec > >(tee "$OUT/gpu_check.log") 2>&1
python3 -c 'import torch;print(torch.__version__, torch.cuda.is_available())' || {
    echo "no torch for python3: nothing to measure"; exit 0; }
if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "torch sees no CUDA device: nothing to measure"; exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
if ! python3 -c 'import pydantic' 2>/dev/null && [ -d .whl ]; then
    python3 -m pip install -q --no-index --find-links .whl --target /tmp/recfound-pydeps pydantic &&
        export PYTHONPATH="$PYTHONPATH:/tmp/recfound-pydeps"
fi
python3 -c 'import transformers, tokenizers, peft, pydantic; print("transformers", transformers.__version__, "peft", peft.__version__)' || {
    echo "transformers/tokenizers/peft/pydantic missing: cannot build the model"; exit 0; }
timeout 330 python3 bench/train_throughput.py --sizes 125m,350m,1b --steps 30 --max-seconds 20 \
    --batch-size 16 --seq-len 512 --out "$OUT/train_throughput_gpu.json"
status=$?
echo "bench exit status $status (124: stopped at the 330 s limit; sizes measured so far are in the JSON)"
exit 0
