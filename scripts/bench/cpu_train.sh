#!/usr/bin/env bash
# Training throughput on the CPU, side by side: one or more `caption` builds and the PyTorch twin
# (scripts/reference/train_throughput.py), alternated, on the same config and tensor shapes.
#
# usage: scripts/bench/cpu_train.sh CONFIG STEPS PYTHON CAPTION_BIN... [-- --set k=v ...]
#   CONFIG   an experiment config whose data the `caption` builds can read (the PyTorch twin reads
#            only its model: and train: sections and trains on random tensors of the same shapes)
#   PYTHON   a Python with torch, torchvision and pyyaml ("none" to skip the twin)
# Extra `--set` overrides after `--` go to every `caption` build and to the twin's config.
# Prints one line per run.
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
    # The twin trains the same shapes: the config with the same `--set` overrides, and the
    # vocabulary and mean padded row length the last build reported.
    twin_config=$(mktemp --suffix .yaml)
    twin_args=$("$python" - "$json" "$config" "$twin_config" "${overrides[@]}" <<'PY'
import json, sys, yaml
report, config_path, twin_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
config = yaml.safe_load(open(config_path))
for arg in sys.argv[4:]:
    if arg == "--set":
        continue
    key, value = arg.split("=", 1)
    *parents, leaf = key.split(".")
    section = config
    for name in parents:
        section = section.setdefault(name, {})
    section[leaf] = yaml.safe_load(value)
yaml.safe_dump(config, open(twin_path, "w"))
print(f"--vocab {report['vocab_size']} --length {round(report['mean_row_length'])}")
PY
)
    # shellcheck disable=SC2086 # twin_args is two flag-value pairs
    echo "pytorch: $("$python" scripts/reference/train_throughput.py --config "$twin_config" --steps "$steps" $twin_args | tail -1)"
    rm -f "$twin_config"
fi
