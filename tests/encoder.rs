//! The program encoder on real FFmpeg: raw frames + PCM in, FLV out into the fan-out.

mod common;

use std::time::Duration;

use tokio::sync::mpsc;
use vistter_agent::config::Config;
use vistter_agent::ffmpeg::registry::Registry;
use vistter_agent::media::encoder::{Encoder, EncoderSettings};
use vistter_agent::media::fanout::Fanout;
use vistter_agent::media::frame::{Frame, OutFrame};
use vistter_agent::media::ingest::ProgramFormat;
use vistter_agent::media::MediaEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_and_pcm_come_out_as_flv() {
    common::require_bin("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let (ev_tx, _ev_rx) = mpsc::channel(256);
    let env = MediaEnv::new(&Config::default(), Registry::open(dir.path()).unwrap(), ev_tx);
    let fanout = Fanout::new(1 << 20);
    let format = ProgramFormat { width: 160, height: 90, fps: 25 };
    let mut enc =
        Encoder::start("t", &EncoderSettings { format, bitrate_kbps: 300, encoder: "libx264".into() }, &fanout, &env);
    let audio = vec![0i16; format.samples_per_frame()];
    let mut sent = 0;
    for n in 0..100u32 {
        let f = Frame::solid(160, 90, ((n * 2) as u8, 0, 0));
        if enc.send(OutFrame::Own(f), &audio) {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let st = enc.status();
    assert!(
        fanout.tags_in() > 50,
        "FLV tags out: {} (sent {sent}, dropped {}, status {st:?})",
        fanout.tags_in(),
        enc.dropped()
    );
    assert!(enc.dropped() < 10, "dropped {}", enc.dropped());
    enc.stop().await;
}
