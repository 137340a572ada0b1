#!/usr/bin/env bash
# The masklet engine's device checks in one call, for a task that is lent a CUDA GPU (no package registry
# there). It installs the wheelhouse, runs the CUDA-only tests, and runs the extraction benchmark at the
# issue's GPU settings (Hiera-L, 1024 px, 480x854, window 32, bf16; K=50, 10, 0 seeded objects, plus the AMG
# per keyframe at the paper's thresholds and a profile that shows which attention kernel runs). Every
# figure goes under $OUT; the last lines are the ratio lines.
#   here:   build a wheelhouse in .whl/ of every dependency pyproject declares, plus pytest (pip wheel -w .whl ...)
#   device: bash scripts/gpu/check.sh                        (carry .whl)
set -uo pipefail
OUT=${OUT:-/tmp/isam2-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps .whl/*.whl >"$OUT/install.log" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -m pytest -q -k cuda tests/test_generator.py tests/test_pooling.py tests/test_metrics_video.py \
  >"$OUT/cuda_tests.txt" 2>&1
tail -1 "$OUT/cuda_tests.txt"
for K in 50 10 0; do
  timeout 900 python3 benchmarks/extract.py --device cuda --seed-objects "$K" --json "$OUT/extract_k$K.json" \
    >"$OUT/extract_k$K.txt" 2>&1
done
timeout 600 python3 benchmarks/extract.py --device cuda --seed-objects 10 --skip-stock --amg-frames 0 --profile \
  >"$OUT/profile_k10.txt" 2>&1
grep -iE "flash|cudnn|efficient|math" "$OUT/profile_k10.txt" | head -5
for K in 50 10 0; do grep -E "image encoder alone|AMG at paper|seed-objects" "$OUT/extract_k$K.txt"; done
