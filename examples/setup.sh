#!/usr/bin/env bash
# A three-camera venue: cameras, a YouTube destination, the example show and a daily schedule.
# Run on the appliance (with sudo there); edit the camera addresses first. The stream key is read
# from the terminal, never from the command line. AGENT_CLI overrides the command (e.g. with
# --data-dir for a trial on a laptop).
set -euo pipefail
cd "$(dirname "$0")"
va=${AGENT_CLI:-vistter-agent}
$va camera add harbour --url rtsp://192.168.1.21:554/stream1
$va camera add pier --url rtsp://192.168.1.22:554/stream1
$va camera add beach --url rtsp://192.168.1.23:554/stream1 --backup harbour
$va destination add youtube --platform youtube --key-stdin
$va timeline load harbour-day.json
$va schedule add daytime --timezone Europe/London --days daily --start 07:00 --end 21:00 \
  --timeline harbour-day --destination youtube
