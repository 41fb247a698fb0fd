#!/usr/bin/env bash
# Training throughput on the CPU, side by side: one or more `caption` builds and the PyTorch twin
# (scripts/reference/train_throughput.py), alternated, on the same config and tensor shapes.
#
# usage: scripts/bench/cpu_train.sh CONFIG STEPS PYTHON CAPTION_BIN... [-- --set k=v ...]
#   CONFIG   an experiment config whose data the `caption` builds can read (the PyTorch twin reads
#            only its model: and train: sections and trains on random tensors of the same shapes)
#   PYTHON   a Python with torch, torchvision and pyyaml ("none" to skip the twin)
# Extra `--set` overrides after `--` go to every `caption` build. Prints one line per run.
set -euo pipefail
config=$1 steps=$2 python=$3
shift 3
bins=()
while [[ $# -gt 0 && $1 != "--" ]]; do bins+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
overrides=("$@")

for bin in "${bins[@]}"; do
    json=$("$bin" train --config "$config" "${overrides[@]}" --benchmark "$steps" 2>/dev/null | tail -1)
    echo "$bin: $json"
done
if [[ $python != none ]]; then
    # The twin trains the same shapes: the vocabulary and mean padded row length the last build reported.
    vocab=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["vocab_size"])' "$json")
    length=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["mean_row_length"]))' "$json")
    captions=$(python3 - "$config" "${overrides[@]}" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
value = config.get("train", {}).get("captions_per_image", 0)
for arg in sys.argv[2:]:
    if arg.startswith("train.captions_per_image="):
        value = int(arg.split("=", 1)[1])
print(value or 5)
PY
)
    twin_config=$(mktemp --suffix .yaml)
    "$python" - "$config" "$twin_config" "$captions" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config.setdefault("train", {})["captions_per_image"] = int(sys.argv[3])
yaml.safe_dump(config, open(sys.argv[2], "w"))
PY
    echo "pytorch: $("$python" scripts/reference/train_throughput.py --config "$twin_config" --steps "$steps" --vocab "$vocab" --length "$length" --captions "$captions" | tail -1)"
    rm -f "$twin_config"
fi
