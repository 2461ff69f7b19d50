#!/usr/bin/env bash
# Choose ort's --segment on training questions (issue 47, item 3): the length-paired SFT reasoner on the first N GSM8K
# training questions (default 48), vanilla CoT and budget 135, greedy, ort int8, 16 per batch, 2 threads, once with whole
# static batches and once per segment length, one run after another. Prints and writes OUT/segments.json: per
# setting, each method's accuracy, mean output tokens and wall seconds, and the budget run's wall time over vanilla's.
# The chosen setting is then reported once on 200 GSM8K test questions with bench/budget_walltime.sh.
#
#   bash bench/ort_segments.sh DATA_DIR OUT [SEGMENT...]        # DATA_DIR: your local copy of gsm8k/
#   bash bench/ort_segments.sh path/to/data artifacts/ort-segments 32 64 128
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash bench/ort_segments.sh DATA_DIR OUT [SEGMENT...]}
OUT=${2:?usage: bash bench/ort_segments.sh DATA_DIR OUT [SEGMENT...]}
shift 2
SEGMENTS=("none" "${@:-32 64 128}")
TALE=${TALE:-.venv/bin/tale}
N=${N:-48}
for segment in ${SEGMENTS[@]}; do
  opts=(); [ "$segment" != none ] && opts=(--segment "$segment")
  echo "== segment $segment: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
  "$TALE" ablate --dataset "gsm8k:$DATA/gsm8k/train.jsonl" --split train --seed 7 --limit "$N" --model runs/reasoner-sft-lengths \
    --methods vanilla,budget --budget-source fixed:135 --backend ort --precision int8 --batch-size 16 --threads 2 \
    "${opts[@]}" --out "$OUT/segment-$segment"
done
"${TALE%/tale}/python" - "$OUT" "${SEGMENTS[@]}" <<'PY'
import json, os, sys
from pathlib import Path
from tale.eval.ablate import collect_all
out, rows = Path(sys.argv[1]), []
for segment in sys.argv[2:]:
    runs = {r.config.method: r.summary for r in collect_all(out / f"segment-{segment}")}
    v, b = runs["vanilla"], runs["budget"]
    rows.append({"segment": None if segment == "none" else int(segment), "n": v.n,
                 **{m: {"accuracy": s.accuracy, "mean_output_tokens": s.mean_output_tokens, "wall_seconds": s.wall_seconds}
                    for m, s in (("vanilla", v), ("budget_135", b))},
                 "wall_ratio": b.wall_seconds / v.wall_seconds})
report = {"engine": "ort:int8, batch 16, 2 threads", "cores": os.cpu_count(), "load": os.getloadavg(), "rows": rows}
(out / "segments.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
PY
