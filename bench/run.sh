#!/usr/bin/env bash
# Benchmarks Berth against distribution (Debian's docker-registry) on this machine and
# writes docs/benchmarks.md. The one documented command; it installs what it needs.
#
#   bash bench/run.sh                  # the full run (3 runs each, about 25 minutes)
#   bash bench/run.sh --quick          # smoke test: small sizes, one run, writes target/bench-data/
#   bash bench/run.sh --only manifest  # one workload: big|small|manifest|head|get|list|auth|push|gc|proxy (comma-separated)
#   bash bench/run.sh --scaleout       # adds a Berth column on S3 (Garage) + PostgreSQL
#   bash bench/run.sh --help           # every flag of berth-bench
#
# Numbers measured while something else uses the CPU are noise: check /proc/loadavg
# first (the page records the load before and after the run).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "bench/run.sh: cargo not found (install Rust, e.g. rustup)" >&2; exit 1; }
packages=()
command -v docker-registry >/dev/null || packages+=(docker-registry)
if [[ " $* " == *" --scaleout "* ]]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
fi
if ((${#packages[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
if [[ " $* " == *" --scaleout "* ]]; then
    command -v garage >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ] || cargo install garage --version 2.5.0 --locked
fi

cargo build --release -p berth -p berth-bench
exec target/release/berth-bench --command "bash bench/run.sh${*:+ $*}" "$@"
