//! ONVIF as cameras speak it, against the fake camera (`common::onvif::FakeOnvif`) over real HTTP(S) on
//! loopback: HTTP Digest (MD5, SHA-256), WS-Security, both, a camera that refuses WS-Security beside Digest, a
//! camera an hour off, stale nonces, HTTPS, the PTZ profile, typed errors, and snapshots. The fake recomputes
//! every digest independently, so a wrong password is really refused.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::onvif::{DigestAlg, FakeOnvif, FakeOnvifOptions, SnapshotAuth, FAKE_JPEG};
use vistter_agent::ptz::{OnvifEndpoint, PtzClient, PtzError};
use vistter_agent::secret::Secret;

fn endpoint(port: u16, opts: &FakeOnvifOptions) -> OnvifEndpoint {
    OnvifEndpoint {
        host: "127.0.0.1".into(),
        port,
        https: false,
        username: Some(opts.username.clone()),
        password: Some(Secret::new(opts.password.clone())),
        profile_token: None,
    }
}

fn quick(opts: FakeOnvifOptions) -> FakeOnvifOptions {
    FakeOnvifOptions { move_duration: Duration::from_millis(200), ..opts }
}

/// Everything the client logs at any level, for tests that look for a leaked secret.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let w = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(sub))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Presets move with each way cameras authenticate. The client finds the way on the first call and keeps it:
/// the second preset costs no 401 and no clock read.
#[tokio::test]
async fn presets_move_whatever_authentication_the_camera_requires() {
    let d = FakeOnvifOptions::default;
    let cases: Vec<(&str, FakeOnvifOptions, &str)> = vec![
        ("WS-Security only", d(), "ws-security"),
        (
            "Digest MD5 only",
            FakeOnvifOptions { require_wsse: false, digest: Some(DigestAlg::Md5), ..d() },
            "digest+ws-security",
        ),
        (
            "Digest SHA-256 only",
            FakeOnvifOptions { require_wsse: false, digest: Some(DigestAlg::Sha256), ..d() },
            "digest+ws-security",
        ),
        ("Digest MD5 and WS-Security", FakeOnvifOptions { digest: Some(DigestAlg::Md5), ..d() }, "digest+ws-security"),
        (
            "Digest SHA-256 and WS-Security",
            FakeOnvifOptions { digest: Some(DigestAlg::Sha256), ..d() },
            "digest+ws-security",
        ),
        (
            "Digest, refusing WS-Security beside it",
            FakeOnvifOptions {
                require_wsse: false,
                digest: Some(DigestAlg::Md5),
                reject_wsse_with_digest: true,
                ..d()
            },
            "digest",
        ),
        ("WS-Security, clock an hour ahead", FakeOnvifOptions { clock_offset_s: 3600, ..d() }, "ws-security"),
        (
            "both, clock an hour behind",
            FakeOnvifOptions { digest: Some(DigestAlg::Sha256), clock_offset_s: -3600, ..d() },
            "digest+ws-security",
        ),
    ];
    for (what, opts, method) in cases {
        let opts = quick(opts);
        let cam = FakeOnvif::start(opts.clone()).await;
        let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));

        ptz.goto_preset_and_settle("dock", Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let first = cam.requests().len();
        ptz.goto_preset_and_settle("1", Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{what}: {e}"));

        let moves: Vec<String> = cam.moves().into_iter().map(|m| m.0).collect();
        assert_eq!(moves, ["dock", "1"], "{what}");
        assert_eq!(ptz.auth_method(), method, "{what}");
        let later = &cam.requests()[first..];
        assert!(later.iter().all(|r| r.status == 200 && r.auth_ok), "{what}: {later:?}");
        assert!(!later.iter().any(|r| r.action == "GetSystemDateAndTime"), "{what}: clock read again");
        if opts.digest.is_some() {
            assert!(later.iter().all(|r| r.http_auth.as_deref() == Some("Digest")), "{what}: {later:?}");
            // One challenge for the whole life of the client: the nonce is reused with a rising nc.
            let challenges = cam.requests().iter().filter(|r| r.status == 401).count();
            assert_eq!(challenges, 1, "{what}");
        }
        if opts.clock_offset_s != 0 {
            assert!((ptz.clock_offset() - opts.clock_offset_s).abs() <= 2, "{what}: {}", ptz.clock_offset());
        }
    }
}

/// A wrong password on a Digest camera is an Auth error; the password is in no error, no Debug output, no log
/// line at any level, and nothing the camera received.
#[tokio::test]
async fn wrong_password_is_refused_and_never_shown() {
    let (logs, _guard) = Logs::capture();
    for (what, digest, wsse) in
        [("digest", Some(DigestAlg::Md5), false), ("both", Some(DigestAlg::Sha256), true), ("ws-security", None, true)]
    {
        let opts = quick(FakeOnvifOptions { digest, require_wsse: wsse, ..Default::default() });
        let cam = FakeOnvif::start(opts.clone()).await;
        let wrong = "Wr0ng-P4ssword-xyz";
        let ep = OnvifEndpoint { password: Some(Secret::new(wrong)), ..endpoint(cam.port(), &opts) };
        let mut ptz = PtzClient::new(ep);

        let err = ptz.goto_preset("1").await.expect_err("refused");

        assert!(matches!(err, PtzError::Auth { .. }), "{what}: {err:?}");
        let shown = format!("{err} | {err:?} | {ptz:?} | {}", logs.text());
        assert!(!shown.contains(wrong) && !shown.contains(&opts.password), "{what}: {shown}");
        assert!(!cam.raw().contains(wrong), "{what}: the password went over the wire");
        assert!(cam.moves().is_empty(), "{what}");
        // Bounded: a refused camera costs a handful of requests, not a loop.
        assert!(cam.requests().len() <= 6, "{what}: {:?}", cam.actions());
    }
}

/// A camera that lets a nonce sign only two requests answers the third with `stale=true`; the client renews
/// the nonce and retries once, and the caller never notices.
#[tokio::test]
async fn a_stale_nonce_is_renewed_without_failing_the_call() {
    let opts = quick(FakeOnvifOptions { digest: Some(DigestAlg::Md5), nonce_uses: 2, ..Default::default() });
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));

    ptz.goto_preset_and_settle("dock", Duration::from_secs(5)).await.expect("settles across stale nonces");
    for _ in 0..3 {
        ptz.status().await.expect("status");
    }

    let refused = cam.requests().iter().filter(|r| r.status == 401).count();
    assert!(refused >= 3, "the nonce was never renewed: {refused} challenges");
    assert_eq!(cam.moves().len(), 1);
}

/// GetSystemDateAndTime is asked once, first, without credentials.
#[tokio::test]
async fn the_clock_is_read_first_without_credentials() {
    let opts = quick(FakeOnvifOptions { digest: Some(DigestAlg::Md5), clock_offset_s: 3600, ..Default::default() });
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));
    ptz.goto_preset("1").await.expect("moves");
    let reqs = cam.requests();
    assert_eq!(reqs[0].action, "GetSystemDateAndTime");
    assert!(!reqs[0].has_security && reqs[0].http_auth.is_none(), "{:?}", reqs[0]);
    assert_eq!(reqs.iter().filter(|r| r.action == "GetSystemDateAndTime").count(), 1);
}

/// A camera that takes our Digest but refuses WS-Security however it is stamped (its clock reads one thing and
/// checks another) is a Clock error, not a password problem.
#[tokio::test]
async fn a_timestamp_the_camera_never_accepts_is_a_clock_error() {
    let opts = quick(FakeOnvifOptions {
        digest: Some(DigestAlg::Md5),
        clock_offset_s: 3600,
        misreports_clock: true,
        ..Default::default()
    });
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));
    let err = ptz.goto_preset("1").await.expect_err("refused");
    assert!(matches!(err, PtzError::Clock { .. }), "{err:?}");
    assert!(err.to_string().contains("clock"), "{err}");
    assert!(!format!("{err:?}").contains(&opts.password));
}

/// PTZ requests name the first profile that has a PTZ configuration, not the first profile; a camera with none
/// is NoPtz.
#[tokio::test]
async fn the_ptz_profile_is_the_first_with_a_ptz_configuration() {
    let opts = quick(FakeOnvifOptions { non_ptz_profiles: vec!["Sub_1".into(), "Sub_2".into()], ..Default::default() });
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));
    ptz.goto_preset("dock").await.expect("moves");
    let goto = cam.requests().into_iter().find(|r| r.action == "GotoPreset").expect("GotoPreset");
    assert_eq!(goto.profile_token.as_deref(), Some(opts.profile_token.as_str()));

    let fixed = quick(FakeOnvifOptions { ptz: false, ..Default::default() });
    let cam = FakeOnvif::start(fixed.clone()).await;
    let mut ptz = PtzClient::new(endpoint(cam.port(), &fixed));
    let err = ptz.goto_preset("dock").await.expect_err("no PTZ");
    assert!(matches!(err, PtzError::NoPtz { .. }), "{err:?}");
    assert!(!cam.actions().contains(&"GotoPreset".to_string()));
}

/// An HTTPS endpoint (TLS in front of the camera, a self-made certificate as cameras have) works, Digest and
/// all.
#[tokio::test]
async fn https_endpoints_work() {
    let opts = quick(FakeOnvifOptions { digest: Some(DigestAlg::Sha256), ..Default::default() });
    let cam = FakeOnvif::start(opts.clone()).await;
    let tls = tokio::task::spawn_blocking({
        let port = cam.port();
        move || common::TlsFront::start(port)
    })
    .await
    .expect("stunnel started");
    let ep = OnvifEndpoint { https: true, ..endpoint(tls.port(), &opts) };
    let mut ptz = PtzClient::new(ep);
    ptz.goto_preset_and_settle("dock", Duration::from_secs(10)).await.expect("moves over HTTPS");
    assert_eq!(cam.moves().len(), 1);
    // And plain HTTP to the TLS port is not silently accepted.
    let mut plain = PtzClient::new(endpoint(tls.port(), &opts)).with_request_timeout(Duration::from_secs(2));
    assert!(plain.goto_preset("dock").await.is_err());
    drop(tls);
}

/// Snapshots: GetSnapshotUri on the smallest profile, then the JPEG with Digest, Basic, or nothing, as the
/// camera asks.
#[tokio::test]
async fn snapshots_come_from_the_snapshot_uri_as_the_camera_guards_it() {
    for (what, auth, digest) in [
        ("digest", SnapshotAuth::Digest, Some(DigestAlg::Md5)),
        ("digest on a WS-Security camera", SnapshotAuth::Digest, None),
        ("basic", SnapshotAuth::Basic, None),
        ("open", SnapshotAuth::None, None),
    ] {
        let opts = FakeOnvifOptions {
            snapshot_auth: auth,
            digest,
            non_ptz_profiles: vec!["Sub".into()],
            ..Default::default()
        };
        let cam = FakeOnvif::start(opts.clone()).await;
        let mut ptz = PtzClient::new(endpoint(cam.port(), &opts));

        let jpeg = ptz.snapshot().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(jpeg, FAKE_JPEG, "{what}");
        let ask = cam.requests().into_iter().find(|r| r.action == "GetSnapshotUri").expect("GetSnapshotUri");
        assert_eq!(ask.profile_token.as_deref(), Some("Sub"), "{what}: the smallest profile");
        let gets: Vec<_> = cam.requests().into_iter().filter(|r| r.action == "snapshot").collect();
        assert_eq!(gets.last().map(|g| g.status), Some(200), "{what}: {gets:?}");
        let want = match auth {
            SnapshotAuth::Digest => Some("Digest"),
            SnapshotAuth::Basic => Some("Basic"),
            SnapshotAuth::None => None,
        };
        assert_eq!(gets.last().and_then(|g| g.http_auth.as_deref()), want, "{what}");
        // The second snapshot goes straight to what worked.
        ptz.snapshot().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let again: Vec<_> = cam.requests().into_iter().filter(|r| r.action == "snapshot").skip(gets.len()).collect();
        assert!(again.len() == 1 && again[0].status == 200, "{what}: {again:?}");
    }
}

/// What is not a JPEG, too big, or refused is an error naming the problem.
#[tokio::test]
async fn bad_snapshots_are_errors() {
    let html = FakeOnvifOptions { snapshot: b"<html>login</html>".to_vec(), ..Default::default() };
    let cam = FakeOnvif::start(html.clone()).await;
    let err = PtzClient::new(endpoint(cam.port(), &html)).snapshot().await.expect_err("not a JPEG");
    assert!(matches!(err, PtzError::BadResponse { ref detail, .. } if detail.contains("JPEG")), "{err:?}");

    let mut huge = FAKE_JPEG.to_vec();
    huge.resize(vistter_agent::ptz::MAX_SNAPSHOT + 1, 0);
    let big = FakeOnvifOptions { snapshot: huge, ..Default::default() };
    let cam = FakeOnvif::start(big.clone()).await;
    let err = PtzClient::new(endpoint(cam.port(), &big)).snapshot().await.expect_err("too big");
    assert!(matches!(err, PtzError::BadResponse { ref detail, .. } if detail.contains("larger")), "{err:?}");

    let opts = FakeOnvifOptions { require_wsse: false, snapshot_auth: SnapshotAuth::Basic, ..Default::default() };
    let cam = FakeOnvif::start(opts.clone()).await;
    let ep = OnvifEndpoint { password: Some(Secret::new("Not-The-Pass-1")), ..endpoint(cam.port(), &opts) };
    let err = PtzClient::new(ep).snapshot().await.expect_err("refused");
    assert!(matches!(err, PtzError::Auth { action: "snapshot", .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("Not-The-Pass-1"));
}

/// Cameras that send their WS-Security refusal with HTTP 401 and no challenge: the right password works, a wrong
/// one is an Auth error after one clock-corrected retry (the clock read again), not a loop.
#[tokio::test]
async fn a_ws_security_refusal_sent_as_401_is_retried_once_after_reading_the_clock() {
    let opts = quick(FakeOnvifOptions { wsse_refusal_status: 401, ..Default::default() });
    let cam = FakeOnvif::start(opts.clone()).await;
    PtzClient::new(endpoint(cam.port(), &opts)).goto_preset("1").await.expect("moves");

    let cam = FakeOnvif::start(opts.clone()).await;
    let ep = OnvifEndpoint { password: Some(Secret::new("Wr0ng-401-pass")), ..endpoint(cam.port(), &opts) };
    let err = PtzClient::new(ep).goto_preset("1").await.expect_err("refused");
    assert!(matches!(err, PtzError::Auth { .. }), "{err:?}");
    let clock_reads = cam.actions().iter().filter(|a| *a == "GetSystemDateAndTime").count();
    assert_eq!(clock_reads, 2, "{:?}", cam.actions());
    assert!(cam.requests().len() <= 4, "{:?}", cam.actions());
}
