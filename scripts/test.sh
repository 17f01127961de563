#!/usr/bin/env bash
# The whole test suite: installs what the tests drive (real registry clients from
# Debian's packages and PyPI, cargo-nextest) if missing, then runs every test.
# Safe to run repeatedly; installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd for systemd-analyze (deploy tests), curl for the redirect tests, docker-registry
# (distribution) as the upstream and replication peer of the federation tests.
apt_packages=(skopeo podman buildah docker.io containerd umoci uidmap postgresql systemd curl docker-registry)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -c 'import oras' 2>/dev/null || python3 -m pip install --quiet 'oras==0.2.43'
# The deploy tests parse deploy/kubernetes/*.yaml with it.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet 'pyyaml==6.0.3'

command -v cargo-nextest >/dev/null || cargo install cargo-nextest --version 0.9.151 --locked

# Garage, a real S3-compatible server for the S3 tests (crates.io; ~8 minutes to build
# on a fresh machine, then kept in ~/.cargo/bin).
command -v garage >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ] || cargo install garage --version 2.5.0 --locked

# Everything, on the embedded stores; each fuzz target of fuzz/ briefly (cargo-fuzz,
# installed if missing; fails on any crash); then every test that can run there again on
# the scale-out stores (PostgreSQL and Garage started by the tests themselves).
cargo nextest run --workspace "$@"
bash scripts/fuzz.sh --ci
BERTH_TEST_BACKEND=scaleout cargo nextest run -p berth --test it -E \
    'test(/^(access|api|audit|crash|clients_|conformance|federation|gc|keyless|logs|management|metrics|config|memory_bounds|policies|proxies|read_only|retention|scrub|shutdown|slow_clients|tls|upload_|replication|webhooks)/)' "$@"
