#!/usr/bin/env bash
# One device call of the H200 case study (issues: fast bin tables, case study): the direct replay
# of a seeded 1,000-request Azure-conversation sample on the bins both tables have measured, then
# the bin table of the same setup on what is left of the call. Run on the GPU host from the repo
# root, after `source benchmarks/device/env.sh` and `export TOKENJOULE_CODE_VERSION=<commit>`:
#
#   bash benchmarks/device/replay_then_table.sh hf-eager 3 540     # table, call number, seconds
#   bash benchmarks/device/replay_then_table.sh vllm-graphs 3 540
#
# The store lives in /tmp/bt (seeded from the committed one) and is copied to $OUT after each step,
# so a call killed at its limit still returns what it measured. A replay already in the store is
# shown, not repeated (validate without --again), and an interrupted one resumes after its last
# finished batch, so the same command serves every session; REPLAY=0 skips the replay step.
# FAITH=IxO,... re-measures those bins with the old protocol as the table reaches them (the
# faithfulness check of benchmarks/bin_table.py; measured bins come first, most requested first),
# e.g. FAITH=256x128,2048x16,4096x16,4096x64,2048x128.
set -u
table="$1"; call="$2"; limit_s="${3:-540}"
case "$table" in hf-eager) setup=hf:eager ;; vllm-graphs) setup=vllm:graphs ;;
  *) echo "table must be hf-eager or vllm-graphs, got $table"; exit 2 ;; esac
db=/tmp/bt/bin_table.db
mkdir -p /tmp/bt
[ -f "$db" ] || cp benchmarks/results/bin_table_h200/bin_table.db "$db"
start=$SECONDS
tag="${table//-/_}_$call"
if [ "${REPLAY:-1}" = 1 ]; then
  timeout $((limit_s - 60)) python -m tokenjoule.cli.main validate --trace azure-conv-2023 --model llama-3.1-8b \
    --engine "$setup" --n 1000 --seed 0 --db "$db" --within-table hf:eager --within-table vllm:graphs --json \
    > "$OUT/replay_$tag.json" 2> "$OUT/replay_$tag.log"
  echo "replay $setup rc=$? in $((SECONDS - start)) s"
  cp "$db" "$OUT/bin_table.db"
fi
left_s=$((limit_s - (SECONDS - start)))
if [ "$left_s" -gt 120 ]; then
  budget=$(python3 -c "print(round(($left_s - 25) / 60, 1))")
  timeout "$left_s" python benchmarks/bin_table.py --tables "$table" --db "$db" --out "$OUT/t" \
    --budget-minutes "$budget" ${FAITH:+--faithfulness-bins "$FAITH"} > "$OUT/${tag}.log" 2>&1
  echo "table $table rc=$? budget ${budget} min"
  tail -3 "$OUT/${tag}.log"
  cp "$db" "$OUT/bin_table.db"
fi
