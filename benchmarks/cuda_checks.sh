#!/usr/bin/env bash
# The checks and measurements that need a CUDA device, in one run (CI has no GPU; run this where one is).
#
#   OUT=DIR PYTHON=python3 bash benchmarks/cuda_checks.sh
#
# 1. the tests that only run where CUDA is (the emulator on CUDA bit-identical to the CPU, --device cuda);
# 2. a digits MLP trained on the GPU and `snn-report` on it with --device cuda: the reference's energy per
#    inference measured from the board's NVML energy counter beside the published-figure estimates;
# Writes into $OUT (default benchmarks/results/cuda): gpu.txt, pytest.log, train.json, report.json, report.md.
# Python packages snnkit needs must be importable by $PYTHON.
set -uo pipefail
OUT=${OUT:-benchmarks/results/cuda}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" || status=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
"$PY" -m pytest -q -rs -m "not lava" -p no:cacheprovider tests/test_loihi_emulator.py tests/test_cli_options_alone.py \
    2>&1 | tee "$OUT/pytest.log" | tail -5 || status=1

echo "== 2. train on CUDA, report with the NVML measurement"
"$PY" -m snnkit.cli.train --dataset digits --model mlp --timesteps 8 --epochs 20 --seed 0 --device cuda \
    --out "$WORK/mlp" --no-progress --json > "$OUT/train.json" || status=1
"$PY" -m snnkit.cli.report "$WORK/mlp/model.pt" --dataset digits --targets torch,loihi-emu --device cuda \
    --attack pgd --eps 0.05,0.1 -o "$WORK/report" --no-progress > /dev/null || status=1
cp "$WORK/report/report.json" "$WORK/report/report.md" "$OUT/" || status=1

rm -rf "$WORK"
exit $status
