#!/usr/bin/env bash
# The checks a CUDA machine runs for lmtrain: the CUDA tests (each layer against its CPU result, training
# with fp32 and bf16 for every cell, a GPU run's checkpoint on the CPU), the training benchmark against
# cuDNN, and the quickstart trained on the GPU and sampled from. CI has no GPU; run this where one is:
#
#     bash scripts/cuda_check.sh [OUTPUT_DIR]      # logs and tables go to OUTPUT_DIR (default cuda-check/)
set -uo pipefail
out=${1:-cuda-check}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

"$python" -m pytest tests/test_cuda.py tests/test_cells.py tests/test_native.py -q -rs -p no:cacheprovider \
    2>&1 | tee "$out/tests.log"
"$python" scripts/bench.py --device cuda --reps 5 2>&1 | tee "$out/bench.md"
"$python" -m lmtrain train configs/quickstart.yaml run_dir="$out/quickstart" train.device=cuda --no-progress \
    --overwrite 2>&1 | tee "$out/quickstart.log"
"$python" -m lmtrain sample "$out/quickstart/best.pt" --device cuda --num-samples 3 --seed 1 \
    2>&1 | tee -a "$out/quickstart.log"
rm -f "$out"/quickstart/*.pt
