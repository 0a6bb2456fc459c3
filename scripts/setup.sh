#!/usr/bin/env bash
# Installs what vistter-agent and its test suite need on Debian/Ubuntu. Idempotent: when every
# tool is already present it only checks and returns in well under a second.
#
#   ./scripts/setup.sh               everything: building, running, and the test suite's components
#   ./scripts/setup.sh --build-only  only what building and running the agent needs (FFmpeg, fonts,
#                                    a C compiler, Rust); `--runtime-only` is the same, kept for old notes
set -euo pipefail

mode=all
case "${1:-}" in
  --build-only|--runtime-only) mode=build ;;
  "") ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac
# The cargo-deb release the packages are built with (tests/deb.rs checks what it makes).
CARGO_DEB_VERSION=3.8.0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# binary → package
have ffmpeg || need+=(ffmpeg)
have ffprobe || need+=(ffmpeg)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# Building: the linker and C compiler (SQLite and ring are compiled from source), and curl for rustup.
have cc || need+=(gcc libc6-dev)
have cargo || have curl || need+=(curl ca-certificates)

if [ "$mode" = all ]; then
  # Test components (TESTBED.md): RTSP camera simulator, RTMP ingest, MQTT broker, TLS, browser.
  have nginx || need+=(nginx-light)
  [ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
  have mosquitto || need+=(mosquitto mosquitto-clients)
  have stunnel4 || have stunnel || need+=(stunnel4)
  have openssl || need+=(openssl)
  # The segment benchmark's baseline (zstd -dc | tar -x, sha256sum).
  have zstd || need+=(zstd)
  have gst-launch-1.0 || need+=(gstreamer1.0-tools)
  # tests/deploy.rs verifies the systemd unit with systemd-analyze.
  have systemd-analyze || need+=(systemd)
  # tests/status_page.rs drives the status page in headless Chromium (DevTools protocol).
  have chromium || need+=(chromium)
  for p in python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
           gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav; do
    pkg_installed "$p" || need+=("$p")
  done
  # The arm64 build and its unit tests (scripts/test-arm64): on an x86-64 host, Debian's cross C
  # toolchain (linker, and compiler of SQLite, zstd, ring) and qemu-user to run the test binaries.
  if [ "$(uname -m)" != aarch64 ]; then
    have aarch64-linux-gnu-gcc || need+=(gcc-aarch64-linux-gnu)
    pkg_installed libc6-dev-arm64-cross || need+=(libc6-dev-arm64-cross)
    have qemu-aarch64 || need+=(qemu-user)
  fi
  # Python for the independent interop client (tests/interop): Debian splits venv/ensurepip off.
  { have python3 && python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null; } \
    || need+=(python3 python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
  # shellcheck disable=SC2207
  need=($(printf '%s\n' "${need[@]}" | sort -u))
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup: cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)" >&2
  else
    # The release named in rust-toolchain.toml, so the first build does not fetch a second one.
    rust="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")"
    echo "setup: installing the Rust toolchain ${rust:-stable} with rustup" >&2
    have curl || { $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null; }
    # The one-line installer first; where it does not answer, the rustup-init binary from rustup's
    # own distribution server (the same installer, without the shell wrapper).
    if ! curl --proto '=https' --tlsv1.2 -sSf --max-time 60 https://sh.rustup.rs \
        | sh -s -- -y --profile minimal -c rustfmt,clippy --default-toolchain "${rust:-stable}"; then
      arch="$(uname -m)"
      # rustup-init acts on the name it is run as: the file must be called rustup-init.
      tmpdir="$(mktemp -d)"
      init="$tmpdir/rustup-init"
      curl --proto '=https' --tlsv1.2 -sSf --max-time 300 -o "$init" \
        "https://static.rust-lang.org/rustup/dist/${arch}-unknown-linux-gnu/rustup-init"
      chmod +x "$init"
      "$init" -y --profile minimal -c rustfmt,clippy --default-toolchain "${rust:-stable}"
      rm -rf "$tmpdir"
    fi
  fi
fi

# rustup installs into ~/.cargo/bin, which a fresh shell may not have on its PATH yet.
if [ "$mode" = all ] && ! have rustup && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if [ "$mode" = all ] && have rustup; then
  # The Rust side of the arm64 build (the standard library for the target), for the toolchain
  # rust-toolchain.toml names; and cargo-deb, which builds the .deb packages (tests/deb.rs).
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if ! (cd "$repo" && rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu); then
    echo "setup: adding the Rust target aarch64-unknown-linux-gnu" >&2
    (cd "$repo" && rustup target add aarch64-unknown-linux-gnu)
  fi
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "setup: installing cargo-deb ${CARGO_DEB_VERSION}" >&2
    cargo install cargo-deb --locked --version "${CARGO_DEB_VERSION}"
  fi
fi

if [ "$mode" = all ]; then
  # Virtual environment for tests/interop/vistter_interop.py (ed25519 + sealed boxes, JCS, MQTT client).
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  # prometheus-client: its reference parser reads the agent's /metrics in tests/status_http.rs.
  if ! "$repo/.venv/bin/python" -c 'import nacl, rfc8785, paho.mqtt, prometheus_client' >/dev/null 2>&1; then
    echo "setup: creating $repo/.venv (pynacl rfc8785 paho-mqtt prometheus-client)" >&2
    "$repo/.venv/bin/python" -c '' >/dev/null 2>&1 || python3 -m venv --clear "$repo/.venv"
    "$repo/.venv/bin/python" -m pip install -q --disable-pip-version-check pynacl rfc8785 paho-mqtt prometheus-client
  fi
fi
