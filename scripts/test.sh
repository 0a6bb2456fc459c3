#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, formatting, lints, every test (unit,
# property and integration tests against real FFmpeg, GStreamer RTSP cameras and nginx-rtmp), then
# the arm64 build and its unit tests under qemu-user (scripts/test-arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Every part runs even when an earlier one failed; the exit status is the first failure's.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast || status=$?
  # nextest does not run doctests
  cargo test --locked --doc || { r=$?; [ "$status" -ne 0 ] || status=$r; }
else
  cargo test --locked --no-fail-fast || status=$?
fi
./scripts/test-arm64 || { r=$?; [ "$status" -ne 0 ] || status=$r; }
exit "$status"
