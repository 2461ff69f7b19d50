#!/usr/bin/env bash
# Do saved tokens save time? The length-paired SFT reasoner on 200 GSM8K test questions, vanilla CoT against budget 135
# (greedy), in one `tale ablate` on one engine: the wall seconds of each run side by side (issue 47; target on the best
# engine: the budget run in <= 0.6x vanilla's wall time at >= 50% fewer tokens). Prints the table and writes
# OUT/walltime.json.
#
#   bash bench/budget_walltime.sh DATA_DIR OUT [ENGINE OPTIONS...]
#   bash bench/budget_walltime.sh path/to/data artifacts/walltime-vllm --backend vllm --dtype float32 --batch-size 32 --threads 2
#   TALE=.venv/bin/tale bash bench/budget_walltime.sh path/to/data artifacts/walltime-ort --backend ort --precision int8 --batch-size 16 --threads 2
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash bench/budget_walltime.sh DATA_DIR OUT [ENGINE OPTIONS...]}
OUT=${2:?usage: bash bench/budget_walltime.sh DATA_DIR OUT [ENGINE OPTIONS...]}
shift 2
TALE=${TALE:-.venv-vllm/bin/tale}
echo "budget wall time: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ), engine: $*"
"$TALE" ablate --dataset "gsm8k:$DATA/gsm8k/test.jsonl" --limit 200 --model runs/reasoner-sft-lengths --methods vanilla,budget \
  --budget-source fixed:135 --out "$OUT" "$@"
"${TALE%/tale}/python" - "$OUT" "$*" <<'PY'
import json, os, sys
from pathlib import Path
from tale.eval.ablate import collect_all
out, engine = Path(sys.argv[1]), sys.argv[2]
runs = {r.config.method: r.summary for r in collect_all(out)}
v, b = runs["vanilla"], runs["budget"]
report = {"engine": engine, "cores": os.cpu_count(), "load": os.getloadavg(), "n": v.n,
          "vanilla": {"accuracy": v.accuracy, "mean_output_tokens": v.mean_output_tokens, "wall_seconds": v.wall_seconds},
          "budget_135": {"accuracy": b.accuracy, "mean_output_tokens": b.mean_output_tokens, "wall_seconds": b.wall_seconds},
          "fewer_tokens": 1 - b.mean_output_tokens / v.mean_output_tokens, "wall_ratio": b.wall_seconds / v.wall_seconds}
(out / "walltime.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
PY
