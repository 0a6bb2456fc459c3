#!/usr/bin/python3
"""RTSP camera simulator for the vistter-agent integration tests.

Serves one live H.264 (+ optional AAC) stream at rtsp://127.0.0.1:PORT/cam with
GstRtspServer. Run it with Debian's /usr/bin/python3 (it needs python3-gi and
gir1.2-gst-rtsp-server-1.0). Prints READY on stdout once the server is attached.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args):
    video = (
        f"videotestsrc is-live=true pattern={args.pattern} horizontal-speed={args.motion} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={args.bitrate} key-int-max={2 * args.fps} "
        f"! video/x-h264,profile=baseline "
        f"! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    audio = (
        f" audiotestsrc is-live=true wave=sine freq={args.freq} "
        f"! audioconvert ! audioresample ! audio/x-raw,rate=44100,channels=1 "
        f"! {args.aac_encoder} ! rtpmp4gpay name=pay1 pt=97"
    )
    return "( " + video + ("" if args.no_audio else audio) + " )"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pattern", default="smpte",
                   help="videotestsrc pattern name or number (smpte, red, green, blue, ball, ...)")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--freq", type=float, default=440.0)
    p.add_argument("--bitrate", type=int, default=300, help="H.264 bitrate, kbit/s")
    p.add_argument("--motion", type=int, default=0,
                   help="pixels per frame the picture scrolls (0: a still picture)")
    p.add_argument("--mount", default="/cam")
    p.add_argument("--aac-encoder", default="avenc_aac", choices=["avenc_aac", "voaacenc"],
                   help="GStreamer's AAC encoder: avenc_aac loads FFmpeg's libraries into this "
                        "process, voaacenc does not (benchmarks that measure FFmpeg's shared "
                        "memory use it)")
    args = p.parse_args()

    Gst.init(None)
    if Gst.ElementFactory.find("videotestsrc") is None:
        print("videotestsrc missing: install gstreamer1.0-plugins-base", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    launch = launch_line(args)
    print(f"launch: {launch}", file=sys.stderr, flush=True)
    factory.set_launch(launch)
    # Each client gets its own pipeline, as a real camera gives each client its own session. A
    # shared media is torn down asynchronously when its last client leaves, and a client arriving
    # meanwhile gets "455 Method Not Valid in This State" or no answer: a fault of the simulator,
    # not of the agent (a quick stop and restart of the agent hit it).
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.mount, factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"rtsp_camera: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)

    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
