#!/usr/bin/env bash
# Metrics benchmark: `caption score` (all metrics, METEOR included, one process as a user runs
# it) against pycocoevalcap 1.2 on the same input, side by side in one run, with the ratio.
# `caption score` runs once cold (METEOR's prepared data is built into a fresh cache folder)
# and five times warm (loaded from it). Needs python3 (a venv with pycocoevalcap is made under
# target/) and java for pycocoevalcap's tokenizer and METEOR.
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
if ! ls target/meteor-data/pycocoevalcap-1.2-*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps pycocoevalcap==1.2 -d target/meteor-data
fi
python3 scripts/bench/make_metrics_input.py "$flickr" "$work" "$n"
cargo build --release --quiet
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"

cache=$(mktemp -d)
score() {
    CAPTION_CACHE_DIR="$cache" /usr/bin/time -f "%e" -o "$work/seconds" target/release/caption score \
        --refs "$work/refs.json" --results "$work/results.json" --meteor-data target/meteor-data --json > "$work/caption_scores.json"
    cat "$work/seconds"
}
echo "--- caption score (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D; files read, data loaded)"
cold=$(score)
echo "cold (METEOR's data prepared into an empty cache): $cold s"
warm=()
for run in 1 2 3 4 5; do
    warm+=("$(score)")
done
echo "warm: ${warm[*]} s"
rm -rf "$cache"

echo "--- pycocoevalcap 1.2 (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr-D)"
"$venv/bin/python" scripts/bench/pycocoevalcap_score.py "$work/refs.json" "$work/results.json" | tail -1 > "$work/pycoco.json"
cat "$work/pycoco.json"

python3 - "$work/caption_scores.json" "$work/pycoco.json" "$cold" "${warm[@]}" <<'EOF'
import json, statistics, sys
ours = json.load(open(sys.argv[1]))
theirs = json.load(open(sys.argv[2]))
cold, warm = float(sys.argv[3]), [float(s) for s in sys.argv[4:]]
same = ours == theirs["scores"]
print("scores identical:", same, "" if same else f"\n  caption: {ours}\n  pycocoevalcap: {theirs['scores']}")
total = theirs["seconds"]["total"]
median = statistics.median(warm)
print(f"pycocoevalcap {total:.2f} s; caption score warm median {median:.2f} s ({total / median:.1f}x), "
      f"cold {cold:.2f} s ({total / cold:.1f}x)")
EOF
