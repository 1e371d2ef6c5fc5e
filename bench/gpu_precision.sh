#!/usr/bin/env bash
# Autocast (bf16 on CUDA) vs fp32 on the same cells, on a GPU machine from a copied checkout carrying
# .gpu-wheels/: every non-fusion method, offline preset, the embedded dataset, k = 1 and 4, seed 42.
# Copies both results.csv and the comparison into $OUT. Usage: bash bench/gpu_precision.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_out}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
"$PY" -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -1 \
    || "$PY" -m pip install --quiet --no-deps --no-index --break-system-packages .gpu-wheels/*.whl 2>&1 | tail -1
T0=$(date +%s)
for precision in auto fp32; do
    "$PY" -m submission run --shots 1 4 --seeds 42 --device cuda --precision "$precision" \
        --methods patchcore simplenet gcad regad clip_logic --out "runs/precision_$precision" > "$OUT/run_$precision.log" 2>&1
    echo "precision $precision rc=$? at +$(( $(date +%s) - T0 )) s"
    cp "runs/precision_$precision/results.csv" "$OUT/results_$precision.csv"
done
"$PY" -m leaderboard compare runs/precision_fp32 runs/precision_auto 2>&1 | tee "$OUT/compare.txt" | tail -40
