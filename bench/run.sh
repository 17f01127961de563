#!/usr/bin/env bash
# Benchmarks Berth against distribution (Debian's docker-registry) on this machine and
# writes docs/benchmarks.md. Installs what it needs. Pass --quick for a smoke run,
# --scaleout to add Berth on S3 (Garage) + PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-registry >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
fi
cargo build --release -p berth -p berth-bench
exec target/release/berth-bench --command "bash bench/run.sh $*" "$@"
