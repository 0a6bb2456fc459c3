#!/usr/bin/env bash
# Installs the agent as a systemd service. Idempotent: running it again changes nothing, and an
# existing /etc/vistter-agent/config.toml is never overwritten.
#
#   sudo deploy/install.sh [path/to/vistter-agent]     (default: target/release/vistter-agent)
#   sudo systemctl enable --now vistter-agent
#
# It also installs the packages the agent runs with (ffmpeg, fonts-dejavu-core) with apt-get when
# they are missing and apt-get exists.
#
# DESTDIR=/some/root installs the files under that root instead (packaging, tests): it then
# installs no package, creates no user and does not call systemctl.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-$here/../target/release/vistter-agent}"
root="${DESTDIR:-}"

if [ ! -f "$bin" ]; then
  echo "install.sh: no agent binary at $bin (build it with: cargo build --release --locked)" >&2
  exit 1
fi

if [ -z "$root" ] && command -v apt-get >/dev/null 2>&1; then
  # What the agent runs: FFmpeg (ffmpeg, ffprobe) and the overlay font. Checked first, so a box that
  # has them is not touched and the script stays quick.
  need=()
  { command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need+=(ffmpeg)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
  if [ ${#need[@]} -gt 0 ]; then
    echo "install.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

if [ -z "$root" ]; then
  # The service's user, in the camera (video) and GPU (render) groups where they exist.
  if ! getent passwd vistter >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/vistter-agent --no-create-home \
      --shell /usr/sbin/nologin vistter
  fi
  for g in video render; do
    if getent group "$g" >/dev/null && ! id -nG vistter | tr ' ' '\n' | grep -qx "$g"; then
      usermod -a -G "$g" vistter
    fi
  done
fi

# The binary goes where the unit (and the .deb) has it; a copy an older install.sh put in
# /usr/local/bin would come first on PATH.
install -d -m 0755 "$root/usr/bin" "$root/etc/systemd/system" "$root/etc/vistter-agent"
install -C -m 0755 "$bin" "$root/usr/bin/vistter-agent"
rm -f "$root/usr/local/bin/vistter-agent"
install -C -m 0644 "$here/systemd/vistter-agent.service" "$root/etc/systemd/system/vistter-agent.service"

conf="$root/etc/vistter-agent/config.toml"
if [ ! -e "$conf" ]; then
  tmp="$(mktemp "$conf.XXXXXX")"
  cat >"$tmp" <<'TOML'
# vistter-agent configuration (see README.md, "Configuration"). Environment variables
# (VISTTER_*) and command-line flags override what is set here.
data_dir = "/var/lib/vistter-agent"
TOML
  chmod 0640 "$tmp"
  if [ -z "$root" ]; then chgrp vistter "$tmp"; fi
  mv "$tmp" "$conf"
  echo "install.sh: wrote a default $conf" >&2
fi

if [ -z "$root" ]; then
  systemctl daemon-reload
  echo "install.sh: installed; start it with: systemctl enable --now vistter-agent" >&2
fi
