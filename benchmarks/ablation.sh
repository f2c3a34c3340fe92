#!/usr/bin/env bash
# NISER+ lever ablation at a reduced budget (2 epochs x 150k sampled prefixes, 1 thread), validation only,
# then concatenation ensembles of two of its checkpoints (issue 14; docs/BENCHMARKS.md section 1).
# Usage: bash benchmarks/ablation.sh [DATA] [OUT]   (defaults: ../shared/data/diginetica runs/ablation)
# Rows already done (their history.json / ensemble.json exist) are skipped, so a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-../shared/data/diginetica}
OUT=${2:-runs/ablation}
SR=${SESSIONREC:-.venv/bin/sessionrec}
# Every row starts from the defaults before issue 14 (position none, batch 100, lr 1e-3) and changes its levers.
common="--epochs 2 --max-train-examples 150000 --threads 1 --quiet --seed 42 --position none --batch-size 100 --lr 1e-3"
recipe="--position reverse --batch-size 512 --lr 3e-3"   # today's defaults
run() { name=$1; shift; [ -f $OUT/$name/history.json ] && return; nice -n 10 $SR train $D --out $OUT/$name $common "$@" > $OUT/$name.log 2>&1; echo "$name done $(date +%T)"; }
ens() { name=$1; shift; [ -f $OUT/$name/ensemble.json ] && return; nice -n 10 $SR ensemble "$@" --data $D --out $OUT/$name --grid 0,0.25,0.5,0.75,1 --quiet > $OUT/$name.log 2>&1; echo "$name done $(date +%T)"; }
mkdir -p $OUT
run base
run pos-reverse --position reverse
run pos-forward --position forward
run dropouts --gnn-dropout 0.2 --table-dropout 0.1
run batch512 --batch-size 512 --lr 3e-3
run recipe $recipe
# The same comparison on a second, earlier validation period (the tail before the newest one).
run base-cut2 --valid-cut 2
run recipe-cut2 $recipe --valid-cut 2
run pos-reverse-cut2 --position reverse --valid-cut 2
run batch512-cut2 --batch-size 512 --lr 3e-3 --valid-cut 2
ens ens-base-rev $OUT/base/best.pt $OUT/pos-reverse/best.pt
ens ens-rev-b512 $OUT/pos-reverse/best.pt $OUT/batch512/best.pt
# Test-split numbers of the selected checkpoints, for reporting only (nothing above read the test set).
[ -f $OUT/test-eval.json ] || $SR evaluate $OUT/base/best.pt $OUT/pos-reverse/best.pt $OUT/batch512/best.pt \
    $OUT/ens-base-rev/best.pt $OUT/ens-rev-b512/best.pt --data $D --json $OUT/test-eval.json
echo all done
