#!/usr/bin/env bash
# Metrics benchmark: `caption score` against pycocoevalcap 1.2 on the same 5,000-image input,
# side by side in one run. Needs python3 (a venv with pycocoevalcap is made under target/) and
# java for pycocoevalcap's tokenizer and METEOR.
# usage: scripts/bench/metrics.sh FLICKR8K_DIR [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
flickr=${1:?usage: metrics.sh FLICKR8K_DIR [N]}
n=${2:-5000}
work=target/bench-metrics
venv=target/venv-pycocoevalcap
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet pycocoevalcap==1.2
fi
python3 scripts/bench/make_metrics_input.py "$flickr" "$work" "$n"
cargo build --release --quiet
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "--- caption score (BLEU, ROUGE-L, CIDEr-D; tokenizer included)"
for run in 1 2 3; do
    /usr/bin/time -f "run $run: %e s wall, %M KB max RSS" target/release/caption score \
        --refs "$work/refs.json" --results "$work/results.json" --json > "$work/caption_scores.json"
done
cat "$work/caption_scores.json"
echo "--- pycocoevalcap 1.2 (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D)"
"$venv/bin/python" scripts/bench/pycocoevalcap_score.py "$work/refs.json" "$work/results.json"
