#!/usr/bin/env bash
# Ladder labels for the success-curve study (docs/results/success-curves.md): the length-paired SFT reasoner asked
# every question at direct, 32, 64, 128, 256 and vanilla CoT, 2 samples each at temperature 0.7, on the mixed
# workload, on vLLM's CPU engine in fp32 (2x ort int8's plain-batch tokens/s on a 2-core AVX2 machine, and no padding
# waste; docs/results/success-curves.md). ENGINE picks another engine, e.g. ENGINE="--backend ort --precision int8
# --batch-size 16" (artifacts/ladder-ort holds the first 48 questions asked that way). Resumable: rerun the same command and every set continues where it stopped (finished questions are
# skipped; a larger --limit grows a set with the same seed). Stages grow all sets together, so a build stopped
# part-way still has training and held-out questions of every kind.
#
#   bash bench/ladder_labels.sh DATA_DIR [STAGE...]     # DATA_DIR: your local copy of gsm8k/, gsm8k_zero/, mathbench/
#
# Needs runs/reasoner-sft-lengths: tale rebuild-reasoner --from artifacts/reasoner-sft-lengths --out runs/reasoner-sft-lengths
# and, for vLLM, its environment (docs/engines.md): python3 -m venv .venv-vllm && .venv-vllm/bin/pip install torch==2.13.0
# -e '.[vllm]' && .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash bench/ladder_labels.sh DATA_DIR [STAGE...]}
shift
STAGES=("${@:-1 2 3 4}")
OUT=${OUT:-artifacts/ladder}
TALE=${TALE:-.venv-vllm/bin/tale}
read -r -a ENGINE_OPTS <<<"${ENGINE:---backend vllm --dtype float32 --batch-size 64}"
COMMON=(--search ladder --model runs/reasoner-sft-lengths "${ENGINE_OPTS[@]}" --threads 2
        --temperature 0.7 --samples 2 --sampling-seed 0 --max-new-tokens 384 --pool 64)

# set name, data set spec, split, seed, shard, then the --limit of each of the 4 stages (before sharding)
SETS=(
  # training: GSM8K train, a GSM8K-Zero shard, MathBench's first halves
  "train-gsm8k       gsm8k:$DATA/gsm8k/train.jsonl                          train 2 0/1 100 300 700 1100"
  "train-gsm8k_zero  gsm8k_zero:$DATA/gsm8k_zero/test.jsonl                 test  0 0/2 100 300 800 1300"
  "train-arithmetic  mathbench:$DATA/mathbench/arithmetic/cloze_en.jsonl     test  - 0/2 40 100 200 300"
  "train-primary     mathbench:$DATA/mathbench/primary/cloze_en.jsonl        test  - 0/2 20 50 100 150"
  "train-middle      mathbench:$DATA/mathbench/middle/single_choice_en.jsonl test  - 0/2 20 50 100 150"
  # held out: GSM8K test in file order, the other GSM8K-Zero shard, MathBench's other halves
  "test-gsm8k        gsm8k:$DATA/gsm8k/test.jsonl                           test  - 0/1 60 150 300 500"
  "test-gsm8k_zero   gsm8k_zero:$DATA/gsm8k_zero/test.jsonl                 test  0 1/2 100 200 300 400"
  "test-arithmetic   mathbench:$DATA/mathbench/arithmetic/cloze_en.jsonl     test  - 1/2 40 100 200 300"
  "test-primary      mathbench:$DATA/mathbench/primary/cloze_en.jsonl        test  - 1/2 20 50 100 150"
  "test-middle       mathbench:$DATA/mathbench/middle/single_choice_en.jsonl test  - 1/2 20 50 100 150"
)

echo "ladder labels: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for stage in ${STAGES[@]}; do
  for line in "${SETS[@]}"; do
    read -r name spec split seed shard l1 l2 l3 l4 <<<"$line"
    limits=("$l1" "$l2" "$l3" "$l4")
    limit=${limits[$((stage - 1))]}
    seed_opt=(); [ "$seed" != "-" ] && seed_opt=(--seed "$seed")
    echo "== stage $stage: $name (limit $limit, shard $shard), load $(cut -d' ' -f1 /proc/loadavg)"
    "$TALE" build "${COMMON[@]}" --dataset "$spec" --split "$split" "${seed_opt[@]}" --shard "$shard" --limit "$limit" \
      --out "$OUT/$name"
  done
done
