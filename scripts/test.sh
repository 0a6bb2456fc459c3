#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, formatting, lints, every test (unit,
# property and integration tests against real FFmpeg, GStreamer RTSP cameras and nginx-rtmp).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
  # nextest does not run doctests
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast
fi
