//! The FFmpeg supervisor against real processes: exit 0 is a failure, stalls are found from
//! progress, stop escalates to SIGKILL, permanent errors are reported, degraded after N failures,
//! and a restarted agent reaps only its own leftovers.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vistter_agent::ffmpeg::argv::{common_prefix, Argv};
use vistter_agent::ffmpeg::backoff::BackoffPolicy;
use vistter_agent::ffmpeg::job::{Job, JobEvent, JobKind, JobSpec, JobStatus, Phase};
use vistter_agent::ffmpeg::registry::{start_ticks, Record, Registry};

fn spec(name: &str, program: &str, args: Argv) -> JobSpec {
    JobSpec {
        name: name.into(),
        kind: JobKind::Pusher {
            owner: "test".into(),
            destination: vistter_agent::values::DestinationId::new(name).expect("test job names are ids"),
            backup: false,
        },
        program: program.into(),
        args: Arc::new(args),
        pipe_stdin: false,
        pipe_stdout: false,
        stale_after: Duration::from_secs(2),
        first_progress_timeout: Duration::from_secs(3),
        input_activity: None,
        backoff: BackoffPolicy::new(Duration::from_millis(100), Duration::from_millis(400), Duration::from_secs(60))
            .unwrap(),
        degraded_after: 10,
        stop_grace: Duration::from_secs(5),
        stderr_lines: 50,
        io: None,
        events: None,
        registry: None,
        extra_fds: vec![],
        env: vec![],
    }
}

async fn wait_status(job: &Job, timeout: Duration, what: &str, pred: impl Fn(&JobStatus) -> bool) -> JobStatus {
    let start = Instant::now();
    loop {
        let s = job.status();
        if pred(&s) {
            return s;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}: {s:?}\nstderr: {:?}", job.stderr_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_exit_with_status_zero_is_a_failure_and_is_restarted() {
    common::require_bin("ffmpeg");
    let args =
        common_prefix().args(["-f", "lavfi", "-i", "testsrc=size=64x36:rate=10", "-t", "0.5", "-f", "null", "-"]);
    let (tx, mut rx) = mpsc::channel(64);
    let job = Job::spawn(JobSpec { events: Some(tx), ..spec("exit0", "ffmpeg", args) });
    let s = wait_status(&job, Duration::from_secs(10), "a restart after exit 0", |s| s.starts >= 2).await;
    assert!(s.last_error.as_deref().unwrap_or("").contains("exit status: 0"), "{s:?}");
    let mut failed = 0;
    while let Ok(e) = rx.try_recv() {
        if let JobEvent::Failed { permanent, .. } = e {
            assert!(!permanent);
            failed += 1;
        }
    }
    assert!(failed >= 1);
    job.stop().await;
}

#[tokio::test]
async fn a_process_whose_progress_stops_is_restarted_but_an_idle_one_is_not() {
    common::require_bin("ffmpeg");
    // FFmpeg waits for FLV on stdin that never comes: no progress at all.
    let args = common_prefix().args(["-f", "flv", "-i", "pipe:0", "-c", "copy", "-f", "null", "-"]);
    let (io_tx, mut io_rx) = mpsc::channel(4);
    let offered = Arc::new(AtomicU64::new(0));
    let job = Job::spawn(JobSpec {
        pipe_stdin: true,
        input_activity: Some(offered.clone()),
        io: Some(io_tx),
        ..spec("idle", "ffmpeg", args.clone())
    });
    let _stdin = io_rx.recv().await.unwrap();
    // Nothing offered: silence in, silence out, not a stall.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = job.status();
    assert_eq!((s.starts, s.consecutive_failures), (1, 0), "{s:?}");
    // Input offered but the process does not move: a stall after first_progress_timeout.
    let feeding = tokio::spawn(async move {
        loop {
            offered.fetch_add(1000, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let s = wait_status(&job, Duration::from_secs(12), "stall detected", |s| s.consecutive_failures >= 1).await;
    assert!(s.last_error.as_deref().unwrap_or("").contains("no progress"), "{s:?}");
    feeding.abort();
    job.stop().await;
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_a_process_that_ignores_signals() {
    let args = Argv::new().args(["-c", "trap '' INT TERM; while true; do sleep 0.1; done"]);
    let job = Job::spawn(JobSpec {
        stop_grace: Duration::from_secs(1),
        first_progress_timeout: Duration::from_secs(60),
        ..spec("stubborn", "/bin/sh", args)
    });
    let s = wait_status(&job, Duration::from_secs(5), "spawned", |s| s.pid.is_some()).await;
    let pid = s.pid.unwrap();
    let t = Instant::now();
    job.stop().await;
    let took = t.elapsed();
    assert!(!common::alive(pid), "the process group was killed");
    assert!(took >= Duration::from_secs(3), "SIGINT (1 s grace) then SIGTERM (2 s) were tried first: {took:?}");
    assert!(took < Duration::from_secs(8), "stop is bounded: {took:?}");
}

#[tokio::test]
async fn permanent_errors_are_reported_and_retried_slowly() {
    common::require_bin("ffmpeg");
    let args = common_prefix().args(["-f", "lavfi", "-i", "testsrc", "-c:v", "no_such_encoder", "-f", "null", "-"]);
    let job = Job::spawn(spec("bad-encoder", "ffmpeg", args));
    let s = wait_status(&job, Duration::from_secs(10), "permanent failure", |s| s.phase == Phase::Backoff).await;
    assert!(s.permanent_error.as_deref().unwrap_or("").contains("encoder"), "{s:?}");
    assert_eq!(s.retry_in_ms, Some(400), "permanent failures wait the maximum backoff");
    job.stop().await;
}

#[tokio::test]
async fn ten_consecutive_failures_report_degraded_and_keep_retrying() {
    common::require_bin("ffmpeg");
    let args = common_prefix().args(["-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-t", "0.1", "-f", "null", "-"]);
    let (tx, mut rx) = mpsc::channel(256);
    let job = Job::spawn(JobSpec {
        backoff: BackoffPolicy::new(Duration::from_millis(10), Duration::from_millis(20), Duration::from_secs(60))
            .unwrap(),
        degraded_after: 3,
        events: Some(tx),
        ..spec("flappy", "ffmpeg", args)
    });
    let s = wait_status(&job, Duration::from_secs(20), "degraded", |s| s.degraded).await;
    assert!(s.consecutive_failures >= 3);
    wait_status(&job, Duration::from_secs(20), "still retrying", |st| st.starts > s.starts + 1).await;
    let mut degraded_events = 0;
    while let Ok(e) = rx.try_recv() {
        if matches!(e, JobEvent::Degraded { .. }) {
            degraded_events += 1;
        }
    }
    assert_eq!(degraded_events, 1, "one degraded event, not one per failure");
    job.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_reaps_only_its_own_leftovers() {
    common::require_bin("ffmpeg");
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let long = ["-re", "-f", "lavfi", "-i", "anullsrc", "-f", "null", "-"];
    let spawn = || {
        let mut c = common::ffmpeg_cmd();
        c.args(long);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        common::ProcGuard::spawn("ffmpeg", &mut c)
    };
    let mut orphan = spawn();
    let mut stranger = spawn();
    let mut recycled = spawn();
    std::thread::sleep(Duration::from_millis(200));
    let write = |pid: u32, ticks: u64| {
        let rec = Record { pid, start_ticks: ticks, job: "relay:x/ingest".into(), agent_pid: 1 };
        std::fs::write(dir.path().join(format!("{pid}.json")), serde_json::to_vec(&rec).unwrap()).unwrap();
    };
    // Ours, from a dead agent: pid and start time match.
    write(orphan.pid(), start_ticks(orphan.pid()).unwrap());
    // A record whose pid now belongs to another process (start time differs): not ours.
    write(recycled.pid(), start_ticks(recycled.pid()).unwrap() + 1);
    let reaped = reg.reap_leftovers().await;
    assert_eq!(reaped, vec![orphan.pid()]);
    assert!(orphan.wait_timeout(Duration::from_secs(5)).is_some(), "the orphan was killed");
    assert!(stranger.is_running(), "an unregistered FFmpeg was left alone");
    assert!(recycled.is_running(), "a recycled pid was left alone");
    assert!(reg.records().is_empty(), "the registry was cleaned");
}
