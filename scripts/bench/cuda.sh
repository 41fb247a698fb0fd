#!/usr/bin/env bash
# The CUDA path end to end on one NVIDIA GPU, and training throughput side by side with the
# PyTorch twin (scripts/reference/train_throughput.py) on the same machine. Results are recorded
# in docs/benchmarks.md.
#
#   [VARIANTS="untuned=BIN fusion=BIN"] [QUICK=1] \
#   scripts/bench/cuda.sh CAPTION_BIN FLICKR_DIR MOBILENETV2_WEIGHTS OUT_DIR [THROUGHPUT_BIN]
#
# scripts/bench/cuda_prepare.sh prepares CAPTION_BIN, FLICKR_DIR, the weights and the variant
# builds on a machine without a GPU, and prints this command.
# - CAPTION_BIN: a `cargo build --release --features cuda` binary (kernels autotuned, cached in
#   CAPTION_KERNEL_CACHE or ~/.cache/caption/cubecl).
# - FLICKR_DIR: a Flickr8k-style folder with Images/, Flickr8k.token.txt, train.txt and dev.txt
#   (a few hundred images are enough: the Flickr8k benchmark trains the decoder on cached
#   features).
# - THROUGHPUT_BIN (optional): the model's throughput example built the same way (`cargo build
#   --release --workspace --features caption/cuda --example throughput`), for encoder inference
#   against torchvision.
# - VARIANTS: other builds of the same commit (`--features caption-train/cuda`: no autotuning;
#   `--features cuda-fusion`) whose shapes and Flickr8k benchmarks run after the main build's,
#   each on its own empty kernel cache, then the shapes benchmark again on the filled cache.
# - QUICK=1 skips the main job and encoder inference.
# Each step has its own time limit and writes its log to OUT_DIR, so a failing step costs only
# its own time. Step 1b profiles a few training steps per kernel (CUBECL_DEBUG_OPTION=profile;
# totals in OUT_DIR/*_profile_top.txt, by kernel_profile.py); step 1c runs the shapes and
# Flickr8k benchmarks again with the fused LSTM kernels on. A benchmark's `warmup_s` is its cold
# start, `images_per_s` the steady state. The last lines printed are the steps' status and the
# side-by-side table (scripts/bench/side_by_side.py).
set -u
bin=$1 flickr=$2 weights=$3 out=$4 throughput=${5:-}
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
# The main build's compiled kernels and autotune results, kept with the results.
export CAPTION_KERNEL_CACHE=${CAPTION_KERNEL_CACHE:-$out/kernel-cache}

# NVRTC and the CUDA headers come from the toolkit when there is one, else from pip's wheels.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH=$dir:${LD_LIBRARY_PATH:-}
done
nvrtc=$(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null)
[ -n "$nvrtc" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$nvrtc
[ -d /usr/local/cuda ] && export CUDA_PATH=/usr/local/cuda

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    nproc
    python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

# step NAME SECONDS COMMAND...: run one step under a time limit, log it, note its status and time.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    printf '%-28s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$summary"
    tail -n 4 "$out/$name.log"
}

# twin_shapes LOG FALLBACK: the vocabulary and padded row length a `caption train --benchmark` log reports, as
# the twin's flags (rows are padded to max_length + 1 with train.fixed_shapes, on by default on
# CUDA), FALLBACK when the log has none.
twin_shapes() {
    python3 -c 'import json, sys
report = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("--vocab", report["vocab_size"], "--length", round(report["mean_row_length"]))' "$1" 2>/dev/null || echo "$2"
}

flickr=(--set data.annotations="$flickr/Flickr8k.token.txt" --set data.images="$flickr/Images"
        --set data.train.list="$flickr/train.txt" --set data.val.list="$flickr/dev.txt"
        --set data.test.list="$flickr/dev.txt" --set model.encoder.weights="$weights")
att=configs/flickr8k_mobilenetv2_attention.yaml
tfm=configs/flickr8k_mobilenetv2_transformer.yaml

# 1. Training throughput, burn on CUDA then PyTorch on CUDA, same model and tensor shapes.
step shapes_bench_cuda 120 "$bin" train --config configs/shapes.yaml --device cuda --benchmark 40
step shapes_bench_torch 60 python3 scripts/reference/train_throughput.py --config configs/shapes.yaml --steps 40 $(twin_shapes "$out/shapes_bench_cuda.log" "--vocab 59 --length 21") --device cuda
step flickr_att_bench_cuda 180 "$bin" train --config $att "${flickr[@]}" --device cuda --benchmark 40
step flickr_att_bench_torch 60 python3 scripts/reference/train_throughput.py --config $att --steps 40 $(twin_shapes "$out/flickr_att_bench_cuda.log" "--vocab 318 --length 17") --device cuda
# 1b. Per-kernel profile of a few training steps (every kernel timed, so slower than the runs
# above; the Flickr8k feature cache already exists): where the step's GPU time goes.
# CUBECL_DEBUG_LOG names the file cubecl logs to (kernel timings, and compilations).
step shapes_profile 90 env CUBECL_DEBUG_LOG="$out/shapes_profile.cubecl.log" CUBECL_DEBUG_OPTION=profile \
    "$bin" train --config configs/shapes.yaml --device cuda --benchmark 5
step flickr_att_profile 90 env CUBECL_DEBUG_LOG="$out/flickr_att_profile.cubecl.log" CUBECL_DEBUG_OPTION=profile \
    "$bin" train --config $att "${flickr[@]}" --device cuda --benchmark 5
for name in shapes_profile flickr_att_profile; do
    python3 scripts/bench/kernel_profile.py "$out/$name.cubecl.log" 25 >"$out/${name}_top.txt" 2>&1
    head -n 12 "$out/${name}_top.txt"
done
# 1c. The fused LSTM-update kernels (crates/model/src/decoder/lstm_update), opt-in until measured.
step shapes_bench_fused 120 env CAPTION_FUSED_KERNELS=1 "$bin" train --config configs/shapes.yaml --device cuda --benchmark 40
step flickr_att_bench_fused 120 env CAPTION_FUSED_KERNELS=1 "$bin" train --config $att "${flickr[@]}" --device cuda --benchmark 40
# 1d. Variant builds: cold start on an empty kernel cache, steady state, then a warm start.
for variant in ${VARIANTS:-}; do
    name=${variant%%=*} variant_bin=${variant#*=}
    cache=$out/kernel-cache-$name
    rm -rf "$cache"
    step shapes_bench_$name 180 env CAPTION_KERNEL_CACHE="$cache" "$variant_bin" train --config configs/shapes.yaml --device cuda --benchmark 40
    step flickr_att_bench_$name 180 env CAPTION_KERNEL_CACHE="$cache" "$variant_bin" train --config $att "${flickr[@]}" --device cuda --benchmark 40
    step shapes_bench_${name}_warm 90 env CAPTION_KERNEL_CACHE="$cache" "$variant_bin" train --config configs/shapes.yaml --device cuda --benchmark 40
done
if [ "${QUICK:-0}" = 1 ]; then throughput=; fi
# 2. The README main job on CUDA: generate the synthetic set, train, validate, test, report.
[ "${QUICK:-0}" = 1 ] || step shapes_train_cuda 240 "$bin" train --config configs/shapes.yaml --device cuda
run=$(ls -d experiments/shapes-* 2>/dev/null | tail -n 1)
if [ -n "$run" ] && [ "${QUICK:-0}" != 1 ]; then
    step shapes_caption_cuda 60 "$bin" caption --checkpoint "$run" --device cuda --beam-size 3 \
        $(ls datasets/shapes/images/test/*.png 2>/dev/null | head -n 4)
    cp "$run/metrics.jsonl" "$run/manifest.json" "$out/" 2>/dev/null
fi
step flickr_att_b128_cuda 120 "$bin" train --config $att "${flickr[@]}" --set train.batch_size=128 --device cuda --benchmark 20
step flickr_att_b128_torch 60 python3 scripts/reference/train_throughput.py --config $att --batch 128 --steps 20 $(twin_shapes "$out/flickr_att_b128_cuda.log" "--vocab 318 --length 17") --device cuda
# 3. Encoder inference (frozen-encoder feature extraction), burn vs torchvision, batch 64.
if [ -n "$throughput" ]; then
    for encoder in mobilenet_v2 resnet101; do
        step ${encoder}_infer_cuda 90 "$throughput" --device cuda --encoder $encoder --batch 64 --iters 10 --decoder-batch 160 --vocab 2543 --length 17
        step ${encoder}_infer_torch 60 python3 scripts/reference/throughput.py --device cuda --encoder $encoder --batch 64 --iters 10 --decoder-batch 160 --vocab 2543 --length 17
    done
fi
step flickr_tfm_bench_cuda 120 "$bin" train --config $tfm "${flickr[@]}" --device cuda --benchmark 20
step flickr_tfm_bench_torch 60 python3 scripts/reference/train_throughput.py --config $tfm --steps 20 $(twin_shapes "$out/flickr_tfm_bench_cuda.log" "--vocab 318 --length 17") --device cuda
echo "== summary"
cat "$summary"
grep -h 'images_per_s\|pairs_per_s' "$out"/*infer*.log 2>/dev/null | cut -c1-400
echo "== burn vs the PyTorch twin (training, same shapes, this GPU)"
python3 scripts/bench/side_by_side.py "$out" | tee "$out/side_by_side.txt"
