#!/usr/bin/env bash
# The captioning service under load on loopback (crates/serve/examples/load.rs): ordinary load
# (many small images, batching on), then worst-case images (64 clients at once, each a different
# 6000x4000 PNG, the most pixels accepted) with the decoding budget and, for comparison, without
# it (16 clients: more would outlast the client's 20 s read timeout). Each run prints one JSON
# line: requests/s, p50/p99 latency of the captioned ones, 503s, and the process's resident memory
# before, at its peak and after.
#
# usage: scripts/bench/serve_load.sh [--checkpoint DIR]   (default: a small random-weight model)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p caption-serve --example load
load=target/debug/examples/load
for run in 1 2; do
    echo "ordinary load, run $run: $("$load" "$@" --requests 1000 --clients 8 --seconds 90 | tail -1)"
done
for run in 1 2; do
    echo "worst case, budget on, run $run: $("$load" "$@" --worst-case --clients 64 --requests 64 --seconds 60 | tail -1)"
done
echo "worst case, budget off: $("$load" "$@" --worst-case --clients 16 --requests 16 --seconds 60 --max-decoding-pixels 100000000000 | tail -1)"
