#!/usr/bin/env bash
# Builds Berth as a statically linked binary (glibc, `-C target-feature=+crt-static`:
# offline, with the toolchain already installed; no musl target needed) and fills the
# directory DIR with deploy/Dockerfile and everything it copies, ready for
# `docker build DIR`. Prints the seconds the build took.
#
#   deploy/image-context.sh DIR
#
# The binary is target/x86_64-unknown-linux-gnu/release/berth (a target directory of its
# own: the flags differ from other builds, so their artifacts are not shared), under
# CARGO_TARGET_DIR instead of target/ when that is set.
# BERTH_IMAGE_PROFILE=dev builds the unoptimised profile instead (the test suite does, to
# keep CI short: the image it checks is the same but for the compiler's optimisations).
set -euo pipefail
out=${1:?usage: deploy/image-context.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
start=$(date +%s)
# --target keeps build scripts and proc-macros dynamic: only the binary is static.
profile=${BERTH_IMAGE_PROFILE:-release}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --manifest-path "$root/Cargo.toml" --profile "$profile" --locked --target "$target" -p berth --bin berth
dir=$profile
[ "$profile" = dev ] && dir=debug
# Where cargo put it: CARGO_TARGET_DIR when set, else the workspace's target/.
binary="${CARGO_TARGET_DIR:-$root/target}/$target/$dir/berth"
mkdir -p "$out/data"
cp "$root/deploy/Dockerfile" "$binary" "$out/"
cp /etc/ssl/certs/ca-certificates.crt "$out/"
echo 'berth:x:65532:65532:berth:/data:/nonexistent' >"$out/passwd"
echo 'berth:x:65532:' >"$out/group"
echo "built in $(($(date +%s) - start)) s"
