#!/usr/bin/env bash
# Backfill each shared labeled folder (../shared/data) through the real definitions into its own
# fresh warehouse, and print wall time, peak memory and the evaluation (evaluation.metrics).
#
#   bash benchmarks/backfill_shared.sh [nab/realKnownCause asd smd]   (default: all three)
#
# Output per folder goes to data/shared_backfills/<folder>/ (warehouse, Dagster home, logs).
set -uo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath ../shared/data)
BIN=.venv/bin
folders=("$@"); [ ${#folders[@]} -eq 0 ] && folders=(nab/realKnownCause asd smd)
for ds in "${folders[@]}"; do
  out=data/shared_backfills/${ds//\//_}; rm -rf "$out"; mkdir -p "$out/dagster_home"
  cp dagster_home/dagster.yaml "$out/dagster_home/"
  labels=$SHARED/$ds/labels.csv; [ -f "$labels" ] || labels=$SHARED/nab/labels.csv
  env DAGSTER_HOME="$PWD/$out/dagster_home" ANOMALY_DATA_DIR="$PWD/$out" ANOMALY_LANDING_DIR="$SHARED/$ds" ANOMALY_LABELS="$labels" \
      ANOMALY_WAREHOUSE="$PWD/$out/warehouse.duckdb" ANOMALY_ANALYST_COPY="$PWD/$out/analytics.duckdb" \
      GX_ANALYTICS_ENABLED=false \
      /usr/bin/time -v $BIN/anomaly-assets backfill > "$out/backfill.log" 2> "$out/time.log"
  rc=$?
  wall=$(grep -E 'Elapsed \(wall' "$out/time.log" | awk '{print $NF}')
  rss=$(grep -E 'Maximum resident' "$out/time.log" | awk '{printf "%.2f GB", $NF/1048576}')
  echo "== $ds: exit $rc, wall $wall, peak RSS $rss, load $(cut -d' ' -f1-3 /proc/loadavg)"
  $BIN/python - "$out/warehouse.duckdb" <<'PY'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for r in con.execute("""SELECT entity_id, points, labeled_points, round(best_f1, 3), round(auc_pr, 3),
                               round(event_recall, 3), round(event_precision, 3)
                        FROM evaluation.metrics ORDER BY entity_id = '*' DESC, entity_id""").fetchall():
    print("   {:<40} points {:>7} labeled {:>6}  best-F1 {}  AUC-PR {}  event recall {}  event precision {}".format(*r))
PY
done
