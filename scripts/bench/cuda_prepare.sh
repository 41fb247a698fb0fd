#!/usr/bin/env bash
# Prepares, on a machine without a GPU, everything scripts/bench/cuda.sh needs on a GPU machine,
# in one folder small enough to copy there: the CUDA builds of this checkout (stripped and
# xz-compressed; no CUDA toolkit needed to build them), a Flickr8k subset and the encoder weights.
#
#   scripts/bench/cuda_prepare.sh FLICKR8K_DIR WEIGHTS OUT_DIR [NAME=FEATURES...]
#
# FLICKR8K_DIR: a Flickr8k folder (Images/, Flickr8k.token.txt, Flickr_8k.trainImages.txt,
# Flickr_8k.devImages.txt). WEIGHTS: MobileNetV2's ImageNet weights (.safetensors). NAME=FEATURES:
# extra builds to compare with the `cuda` build, e.g. untuned=caption-train/cuda (no autotuning)
# fusion=cuda-fusion. Each build has its own target folder (target/bench-NAME), so the CPU build
# in target/release stays as it is. The last lines printed are the commands to run on the GPU
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
flickr=$1 weights=$2 out=$3
shift 3
mkdir -p "$out/flickr8k/Images"

# The Flickr8k benchmarks train the decoder on cached features: 200 train and 50 dev photos
# give the per-step shapes of the full set (batch 32 × 5, T = 17) at a small vocabulary.
head -n 200 "$flickr/Flickr_8k.trainImages.txt" >"$out/flickr8k/train.txt"
head -n 50 "$flickr/Flickr_8k.devImages.txt" >"$out/flickr8k/dev.txt"
cat "$out/flickr8k/train.txt" "$out/flickr8k/dev.txt" | while read -r image; do
    install -m 644 "$flickr/Images/$image" "$out/flickr8k/Images/"
done
grep -F -f <(sed 's/$/#/' "$out/flickr8k/train.txt" "$out/flickr8k/dev.txt") "$flickr/Flickr8k.token.txt" >"$out/flickr8k/Flickr8k.token.txt"
install -m 644 "$weights" "$out/mobilenetv2.safetensors"

variants=()
for build in cuda=cuda "$@"; do
    name=${build%%=*} features=${build#*=}
    target=target/bench-$name
    cargo build --release --quiet --features "$features" --target-dir "$target"
    strip -o "$out/caption-$name" "$target/release/caption"
    xz -T0 -f "$out/caption-$name"
    [ "$name" = cuda ] || variants+=("$name=\$out/caption-$name")
done
du -sh "$out"/* | sed 's/^/  /'
cat <<EOF
On the GPU machine, from the repository root, with OUT_DIR copied there as \$out:
  for f in \$out/caption-*.xz; do xz -dkf "\$f" && chmod +x "\${f%.xz}"; done
  QUICK=1 VARIANTS="${variants[*]}" scripts/bench/cuda.sh \$out/caption-cuda \$out/flickr8k \$out/mobilenetv2.safetensors RESULTS_DIR
EOF
