#!/bin/bash
# Continue the four shipped models at once on one GPU for DEADLINE seconds (issue 11, item 3;
# docs/training.md, "GPU continuation"). Run from the repository root on the GPU machine, after
#   python scripts/gpu/pack_data.py ../shared/data .gpu     (here: the data, coded to fit a call)
# and, where the machine lacks them, wheels of soundfile/soxr/pesq/pystoi/cffi in .whl/.
# Each model is its own `dyncp train` process (one GPU: world size 1; the nccl process group
# needs two or more GPUs); every finished epoch is collected into $OUT (scripts/gpu/collect.py).
#   MODE=test PY=.venv/bin/python OUT=/tmp/o DEADLINE=120 bash scripts/gpu/continue.sh  (CPU, tiny)
set -u
MODE=${MODE:-gpu}; DEADLINE=${DEADLINE:-450}; T0=$(date +%s)
PY=${PY:-python3}; WEIGHTS=${WEIGHTS:-dyncp/weights}; OUT=${OUT:?set OUT to a folder}
RUNS=${RUNS:-/tmp/gpuruns}; DATA=${DATA:-/tmp/gpudata}
mkdir -p "$RUNS/static" "$OUT"
. scripts/gpu/setup.sh
[ "$MODE" = gpu ] && nvidia-smi > "$RUNS/static/gpu.txt" 2>&1
echo "set-up done in $(( $(date +%s) - T0 )) s"
if [ "$MODE" = gpu ]; then   # ~1,400-1,900 s of audio a second each on an H200 + 16 cores
  SIZE="--set train.batch_size=32 --set train.epochs=16 --set train.steps_per_epoch=500
        --set data.monitor=.gpu/realdev --set data.monitor_every=3"
  W=(4 3 3 3)                # data workers: the loaders, not the GPU, set the pace
else
  SIZE="--set train.batch_size=4 --set train.epochs=2 --set train.steps_per_epoch=3
        --set data.valid_files=2 --set data.monitor=.gpu/realdev --set data.monitor_every=2"
  W=(1 1 1 1)
fi
COMMON="--no-progress --set data.train=$MIX --set train.threads=1 $SIZE"
KD="--set loss.distill_weight=1.0 --set train.teacher=$WEIGHTS/static.pt"
GATED="--set train.lr=3e-4 --set train.lr_decay=0.85 --set train.ramp_fraction=0"
END=$(( $(date +%s) + DEADLINE ))
job() {  # NAME CONFIG WORKERS ARGS...: stopped (SIGINT) at the deadline; the last epoch counts
  local name=$1 cfg=$2 w=$3; shift 3; mkdir -p "$RUNS/$name"
  timeout -s INT $(( END - $(date +%s) )) $PY -m dyncp train --config "$cfg" \
      --run-dir "$RUNS/$name" $COMMON --set train.num_workers=$w --set name=gpu_$name "$@" \
      > "$RUNS/$name/job.log" 2>&1
  echo "$name: exit $? at $(( $(date +%s) - T0 )) s"
}
job static configs/real_static.toml ${W[0]} --init $WEIGHTS/static.pt \
    --set train.lr=2e-4 --set train.lr_decay=0.88 &
job dyncp75 configs/real_dyncp75.toml ${W[1]} --init $WEIGHTS/dyncp75.pt $KD $GATED &
job dyncp50 configs/real_dyncp50.toml ${W[2]} --init $WEIGHTS/dyncp50.pt $KD $GATED &
job budget configs/real_budget.toml ${W[3]} --init $WEIGHTS/budget.pt $KD $GATED &
sleep 5; $PY scripts/gpu/collect.py "$RUNS" 30 & COLLECT=$!
[ "$MODE" = gpu ] && (sleep 90; nvidia-smi >> "$RUNS/static/gpu.txt" 2>&1
                      top -bn1 | head -25 >> "$RUNS/static/gpu.txt") &
wait %1 %2 %3 %4
kill $COLLECT 2>/dev/null; $PY scripts/gpu/collect.py "$RUNS"
for r in "$RUNS"/*/; do
  echo "== $r"; tail -2 "$r/job.log"
  cut -d, -f1,2,9,11,13,14,15,17 "$r/log.csv" 2>/dev/null | tr , '\t'
done
echo "total $(( $(date +%s) - T0 )) s"
