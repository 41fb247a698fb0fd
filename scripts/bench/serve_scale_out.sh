#!/usr/bin/env bash
# Replicas on shared stores under load on loopback (crates/serve/examples/scale_out.rs): one
# server on the embedded stores (SQLite, in-process cache), one on PostgreSQL + Redis directly,
# then one and two such servers behind nginx (deploy/nginx.conf), each with distinct images
# (every request decoded, recorded and cached) and with one image (answered from the cache).
# Needs redis-server, PostgreSQL and nginx installed (Debian: redis-server postgresql nginx).
# Prints one JSON line per run: requests/s and p50/p99 latency.
#
# usage: scripts/bench/serve_scale_out.sh [--checkpoint DIR] [--requests 600] [--clients 8] [--seconds 60]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p caption-serve --example scale_out
target/release/examples/scale_out "$@"
