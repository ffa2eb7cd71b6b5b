#!/usr/bin/env bash
# The trainer's GPU check, one call of about 5 minutes on one H100/H200 (docs/trainer.md, "GPU run"):
#   1. the GPU tests (bf16 + compile + selective checkpointing; sharded async checkpoint round trip);
#   2. the 1B config at sequence 2,048, bf16, torch.compile: 200 timed training steps of corpusmill's
#      model as `corpusmill train` builds it, then transformers' LlamaForCausalLM on the same shapes
#      and tokens (30 steps): tokens/s, MFU, peak memory, the ratio (goal: MFU >= 45 %);
#   3. the 1B config under the real training loop for 60 steps with a sharded checkpoint at step 50
#      (tokens/s and MFU from its own log), resumed from that checkpoint to step 60.
# Results go to $OUT (default runs/gpu). Needs a Python with CUDA torch 2.13 and transformers
# (PYTHON=..., default python); the shards for step 3 are made here from random tokens (throughput
# only: the losses of random tokens mean nothing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
status=0

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || { echo "gpu_run: no nvidia-smi: no GPU here"; exit 1; }
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_run: torch sees no CUDA GPU')" || exit 1

echo "== 1. GPU tests"
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_model.py tests/test_train.py tests/test_trainer_gpu.py \
    2>&1 | tee "$OUT/gpu_tests.txt" || status=1

echo "== 2. 1B throughput and MFU, corpusmill vs transformers"
timeout 240 $PY bench/train_bench.py --config 1B --seq-len 2048 --micro-batch 8 --steps 200 --hf-steps 30 \
    --json-out "$OUT/train_bench.json" 2>&1 | tee "$OUT/train_bench.txt" || status=1

echo "== 3. the training loop at 1B: 50 steps, sharded checkpoint, resume to 60"
timeout 200 $PY bench/gpu_loop_check.py --out "$OUT/loop" 2>&1 | tee "$OUT/loop.txt" || status=1

echo "gpu_run: done (status $status); results in $OUT"
exit $status
