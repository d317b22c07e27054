#!/bin/bash
# Study rows on one GPU (issue 12; docs/study.md): row a1 (the static model, from scratch) with
# most of the data workers, then ROWS (fine-tunes of a1) at once, each its own process. The rows
# are those of benchmarks/study.py with its recipe (N = 2,000 steps, batch 16), on the data of
# scripts/gpu/pack_data.py. Set-up as continue.sh; MODE=test runs it tiny on CPU.
set -u
MODE=${MODE:-gpu}; DEADLINE=${DEADLINE:-300}; T0=$(date +%s)
PY=${PY:-python3}; OUT=${OUT:?set OUT to a folder}; ROWS=${ROWS:-a5 d3 d6}
RUNS=${RUNS:-/tmp/gpustudy}; DATA=${DATA:-/tmp/gpudata}; LOGS=$RUNS/logs
mkdir -p "$LOGS" "$OUT"
. scripts/gpu/setup.sh
if [ "$MODE" = gpu ]; then SIZE="--steps 2000"; W0=14; W=5
else SIZE="--steps 4 --set train.steps_per_epoch=2 --set train.batch_size=4 --set data.valid_files=2 --dev-limit 2"; W0=1; W=1
fi
S="--config configs/real_static.toml --runs $RUNS --dev .gpu/realdev --no-progress --no-dnsmos
   --set data.train=$MIX --set data.monitor= --set train.threads=1 $SIZE"
END=$(( $(date +%s) + DEADLINE ))
row() {  # ID WORKERS
  timeout -s INT $(( END - $(date +%s) )) $PY benchmarks/study.py $S --rows $1 \
      --set train.num_workers=$2 --json $LOGS/$1.json --md $LOGS/$1.md > $LOGS/$1.log 2>&1
  echo "row $1: exit $? at $(( $(date +%s) - T0 )) s"
}
collect() {
  ( cd "$RUNS" && tar cf "$OUT/.rows.tmp" logs */eval.json */log.csv */config.toml 2>/dev/null
    mv "$OUT/.rows.tmp" "$OUT/rows.tar"
    for d in */best.pt; do [ -f "$d" ] && cp "$d" "$OUT/.w.tmp" && mv "$OUT/.w.tmp" "$OUT/${d%%/*}.pt"; done )
}
echo "set-up done in $(( $(date +%s) - T0 )) s"
row a1 $W0
for r in $ROWS; do row $r $W & done
while [ -n "$(jobs -r)" ]; do sleep 20; collect; done
collect; ls -la "$OUT"; tail -n 3 $LOGS/*.log
echo "total $(( $(date +%s) - T0 )) s"
