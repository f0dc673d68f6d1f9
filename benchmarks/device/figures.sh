#!/usr/bin/env bash
# One device call of the paper's controlled experiments (Figures 2-5, benchmarks/paper_figures.py)
# on what a call has left. Run on the GPU host from the repo root, after
# `source benchmarks/device/env.sh` and `export TOKENJOULE_CODE_VERSION=<commit>`:
#
#   bash benchmarks/device/figures.sh 420                                  # seconds for this step
#   ONLY=paper-decoding-brackets,paper-moe bash benchmarks/device/figures.sh 300
#
# The store lives in /tmp/pf (seeded from the committed benchmarks/results/paper_figures_h200/
# store the first time), so consecutive calls on a warm machine continue one store; it is copied
# to $OUT/pf after the step, with the findings files. Every cell is keyed by its spec hash, so a
# cell measured in an earlier session is skipped, and a cut-off call loses at most the cell it was
# measuring (the store commits per cell).
set -u
limit_s="${1:-420}"
db=/tmp/pf/paper_figures.db
committed=benchmarks/results/paper_figures_h200/paper_figures.db
mkdir -p /tmp/pf "$OUT/pf"
[ -f "$db" ] || { [ -f "$committed" ] && cp "$committed" "$db"; }
budget=$(python3 -c "print(round(($limit_s - 40) / 60, 1))")
with_vllm=--without-vllm
[ -f /tmp/vsite/.done ] && with_vllm=--with-vllm
timeout "$limit_s" python benchmarks/paper_figures.py --db "$db" --out "$OUT/pf" --budget-minutes "$budget" \
  $with_vllm ${ONLY:+--only "$ONLY"} > "$OUT/pf/figures.log" 2>&1
echo "figures rc=$? budget ${budget} min $with_vllm"
grep -E "^== |measured,|stopped" "$OUT/pf/figures.log" | tail -12
cp "$db" "$OUT/pf/paper_figures.db"
