//! PTZ presets over ONVIF against a fake camera over real HTTP on loopback (`common::onvif::FakeOnvif`), which
//! checks the SOAP bodies and recomputes every WS-Security digest. Assertions are on what the camera saw and on
//! what a caller of the client gets back.

mod common;

use std::time::{Duration, Instant};

use common::onvif::{FakeOnvif, FakeOnvifOptions};
use vistter_agent::ptz::{MoveState, OnvifEndpoint, PtzClient, PtzError};
use vistter_agent::secret::Secret;

fn endpoint(cam: &FakeOnvif, opts: &FakeOnvifOptions) -> OnvifEndpoint {
    OnvifEndpoint {
        host: "127.0.0.1".into(),
        port: cam.port(),
        https: false,
        username: Some(opts.username.clone()),
        password: Some(Secret::new(opts.password.clone())),
        profile_token: None,
    }
}

/// A 2 s move settles in about 2 s: the client waited for IDLE, not for the HTTP answer to GotoPreset. The camera
/// saw discovery, one GotoPreset, then GetStatus polls until the move ended, every one correctly signed.
#[tokio::test]
async fn goto_with_correct_credentials_waits_until_the_camera_reports_idle() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));

    let t0 = Instant::now();
    let elapsed = ptz.goto_preset_and_settle("dock", Duration::from_secs(10)).await.expect("settles");
    let wall = t0.elapsed();

    assert!(elapsed >= Duration::from_millis(1800) && elapsed <= Duration::from_millis(3500), "{elapsed:?}");
    assert!(wall >= elapsed, "{wall:?} < {elapsed:?}");
    // The camera's clock is read first (unauthenticated), then discovery and the move.
    let reqs: Vec<_> = cam.requests().into_iter().skip(1).collect();
    assert_eq!(cam.actions()[0], "GetSystemDateAndTime");
    let actions: Vec<&str> = reqs.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions[..3], ["GetCapabilities", "GetProfiles", "GotoPreset"], "{actions:?}");
    assert!(actions.len() >= 4 && actions[3..].iter().all(|a| *a == "GetStatus"), "{actions:?}");
    assert!(reqs.iter().all(|r| r.auth_ok && r.has_security), "{reqs:?}");
    assert_eq!(reqs[2].preset_token.as_deref(), Some("dock"));
    // Polled at ~200 ms, not hammered and not left idle: a 2 s move takes 5 to ~15 polls.
    let polls = actions.len() - 3;
    assert!((5..=15).contains(&polls), "{polls} GetStatus polls");
    let moves = cam.moves();
    assert_eq!(moves.len(), 1, "{moves:?}");
    let (preset, _, end) = &moves[0];
    assert_eq!(preset, "dock");
    // The poll that returned Ok came after the move ended, and the one before it saw it still moving.
    let last = reqs.last().expect("requests");
    assert!(last.at >= *end, "settled before the move ended");
    assert!(reqs[reqs.len() - 2].at < *end, "one poll too many after the move ended");

    let st = ptz.status().await.expect("status");
    assert_eq!((st.pan_tilt, st.zoom), (MoveState::Idle, MoveState::Idle));
}

/// Discovery runs once per client: a second goto goes straight to the PTZ service.
#[tokio::test]
async fn discovery_is_cached_across_calls() {
    let opts = FakeOnvifOptions { move_duration: Duration::from_millis(100), ..Default::default() };
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));
    ptz.goto_preset("1").await.expect("goto 1");
    ptz.goto_preset("2").await.expect("goto 2");
    assert_eq!(cam.actions(), ["GetSystemDateAndTime", "GetCapabilities", "GetProfiles", "GotoPreset", "GotoPreset"]);
    assert_eq!(cam.moves().iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["1", "2"]);
}

/// A wrong password is an Auth error, not a generic failure, and neither the password nor anything derived
/// from it shows up in what a log line would print.
#[tokio::test]
async fn wrong_password_is_an_auth_error_that_never_shows_the_password() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let wrong = "Wr0ng-but-n0t-s3cret-enough";
    let ep = OnvifEndpoint { password: Some(Secret::new(wrong)), ..endpoint(&cam, &opts) };
    let mut ptz = PtzClient::new(ep);

    let err = ptz.goto_preset_and_settle("1", Duration::from_secs(5)).await.expect_err("refused");

    assert!(matches!(err, PtzError::Auth { .. }), "{err:?}");
    let shown = format!("{err} | {err:?} | {ptz:?}");
    assert!(!shown.contains(wrong) && !shown.contains(&opts.password), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{}", cam.port())), "error names the camera: {shown}");
    let reqs = cam.requests();
    // Only the clock read, which needs no credentials, was let through.
    let signed: Vec<_> = reqs.iter().filter(|r| r.action != "GetSystemDateAndTime").collect();
    assert!(!signed.is_empty() && signed.iter().all(|r| !r.auth_ok), "{reqs:?}");
    assert!(cam.moves().is_empty(), "the camera moved for a refused request");
}

/// A move longer than the settle budget is a Timeout after the budget, not a hang and not a success.
#[tokio::test]
async fn settle_timeout_shorter_than_the_move_gives_timeout() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));

    let t0 = Instant::now();
    let err = ptz.goto_preset_and_settle("2", Duration::from_secs(1)).await.expect_err("still moving");
    let wall = t0.elapsed();

    match &err {
        PtzError::Timeout { waited, preset, .. } => {
            assert_eq!(*waited, Duration::from_secs(1));
            assert_eq!(preset, "2");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(wall >= Duration::from_millis(950) && wall < Duration::from_millis(1600), "{wall:?}");
    assert_eq!(cam.moves().len(), 1);
}

/// A preset the camera does not have (its `ter:NoToken` fault) is UnknownPreset, naming it, and nothing moves.
#[tokio::test]
async fn unknown_preset_is_a_camera_fault() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));

    let err = ptz.goto_preset_and_settle("no-such-preset", Duration::from_secs(5)).await.expect_err("fault");

    match &err {
        PtzError::UnknownPreset { preset, .. } => assert_eq!(preset, "no-such-preset"),
        other => panic!("expected UnknownPreset, got {other:?}"),
    }
    assert!(cam.moves().is_empty());
    assert!(!cam.actions().contains(&"GetStatus".to_string()), "polled after a refused goto");
}

/// A preset token is data, not markup: one crafted to close the element and add another is sent escaped and
/// reaches the camera as one (unknown) token.
#[tokio::test]
async fn preset_token_cannot_inject_xml_into_the_request() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));
    let evil = "x</tptz:PresetToken><tptz:PresetToken>1";

    let err = ptz.goto_preset(evil).await.expect_err("unknown preset");

    assert!(matches!(err, PtzError::UnknownPreset { .. }), "{err:?}");
    let goto = cam.requests().into_iter().find(|r| r.action == "GotoPreset").expect("a GotoPreset");
    assert_eq!(goto.preset_token.as_deref(), Some(evil));
    assert!(cam.moves().is_empty());
}

/// Nobody listening: Unreachable, fast, naming the camera.
#[tokio::test]
async fn closed_port_is_unreachable_quickly() {
    let port = common::free_port();
    let mut ptz = PtzClient::new(OnvifEndpoint {
        host: "127.0.0.1".into(),
        port,
        https: false,
        username: Some("admin".into()),
        password: Some(Secret::new("whatever-pass")),
        profile_token: None,
    });

    let t0 = Instant::now();
    let err = ptz.goto_preset_and_settle("1", Duration::from_secs(30)).await.expect_err("nobody home");

    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(matches!(err, PtzError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// A camera that accepts the connection and never answers (hung firmware) costs one request timeout, then
/// Unreachable: it never holds the caller indefinitely.
#[tokio::test]
async fn silent_camera_costs_one_request_timeout_then_unreachable() {
    // The kernel completes the handshake into the backlog; nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let mut ptz = PtzClient::new(OnvifEndpoint {
        host: "127.0.0.1".into(),
        port,
        https: false,
        username: None,
        password: None,
        profile_token: Some("Profile_000".into()),
    })
    .with_request_timeout(Duration::from_millis(500));

    let t0 = Instant::now();
    let err = ptz.goto_preset("1").await.expect_err("no answer");

    let wall = t0.elapsed();
    assert!(wall >= Duration::from_millis(450) && wall < Duration::from_secs(2), "{wall:?}");
    assert!(matches!(err, PtzError::Unreachable { ref reason, .. } if reason.contains("no answer")), "{err:?}");
    drop(silent);
}

/// A configured profile token is used as is: no GetProfiles, and every PTZ request names it.
#[tokio::test]
async fn configured_profile_token_is_used_without_asking_the_camera() {
    let opts = FakeOnvifOptions {
        profile_token: "MainStream&PTZ".into(),
        move_duration: Duration::from_millis(300),
        ..Default::default()
    };
    let cam = FakeOnvif::start(opts.clone()).await;
    let ep = OnvifEndpoint { profile_token: Some("MainStream&PTZ".into()), ..endpoint(&cam, &opts) };
    let mut ptz = PtzClient::new(ep);

    ptz.goto_preset_and_settle("1", Duration::from_secs(5)).await.expect("settles");

    let reqs = cam.requests();
    assert!(!reqs.iter().any(|r| r.action == "GetProfiles"), "{reqs:?}");
    let ptz_reqs: Vec<_> = reqs.iter().filter(|r| r.path == "/onvif/ptz_service").collect();
    assert!(ptz_reqs.len() >= 2);
    assert!(ptz_reqs.iter().all(|r| r.profile_token.as_deref() == Some("MainStream&PTZ")), "{ptz_reqs:?}");
}

/// Without a configured token the client asks GetProfiles and uses the camera's first profile with PTZ.
#[tokio::test]
async fn profile_token_is_discovered_when_not_configured() {
    let opts = FakeOnvifOptions {
        profile_token: "Profile_token_7".into(),
        move_duration: Duration::from_millis(300),
        ..Default::default()
    };
    let cam = FakeOnvif::start(opts.clone()).await;
    let mut ptz = PtzClient::new(endpoint(&cam, &opts));

    ptz.goto_preset_and_settle("1", Duration::from_secs(5)).await.expect("settles");

    let reqs = cam.requests();
    let profiles = reqs.iter().position(|r| r.action == "GetProfiles").expect("GetProfiles asked");
    let goto = reqs.iter().position(|r| r.action == "GotoPreset").expect("GotoPreset sent");
    assert!(profiles < goto);
    assert_eq!(reqs[profiles].path, "/onvif/media_service");
    assert_eq!(reqs[goto].profile_token.as_deref(), Some("Profile_token_7"));
}

/// A configured token the camera does not have is the camera's NoProfile fault, not silently replaced.
#[tokio::test]
async fn configured_profile_token_the_camera_lacks_is_a_fault() {
    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let ep = OnvifEndpoint { profile_token: Some("Profile_999".into()), ..endpoint(&cam, &opts) };
    let mut ptz = PtzClient::new(ep);

    let err = ptz.goto_preset("1").await.expect_err("no such profile");

    assert!(matches!(err, PtzError::Fault { ref code, .. } if code.contains("NoProfile")), "{err:?}");
}

/// Without a username no security header is sent at all (cameras with authentication off).
#[tokio::test]
async fn without_username_no_security_header_is_sent() {
    let opts = FakeOnvifOptions {
        username: String::new(),
        password: String::new(),
        move_duration: Duration::from_millis(300),
        ..Default::default()
    };
    let cam = FakeOnvif::start(opts.clone()).await;
    let ep = OnvifEndpoint { username: None, password: Some(Secret::new("ignored-pass")), ..endpoint(&cam, &opts) };
    let mut ptz = PtzClient::new(ep);

    ptz.goto_preset_and_settle("1", Duration::from_secs(5)).await.expect("settles");

    let reqs = cam.requests();
    assert!(reqs.len() >= 4 && reqs.iter().all(|r| !r.has_security), "{reqs:?}");
}

/// The fake is only worth its passing tests if it is as strict as a camera: unsigned, stale and replayed
/// requests are refused with `ter:NotAuthorized`; the same request freshly signed is accepted.
#[tokio::test]
async fn fake_camera_refuses_unsigned_stale_and_replayed_requests() {
    use base64::Engine as _;
    use sha1::Digest as _;

    let opts = FakeOnvifOptions::default();
    let cam = FakeOnvif::start(opts.clone()).await;
    let url = format!("http://127.0.0.1:{}/onvif/ptz_service", cam.port());
    let b64 = base64::engine::general_purpose::STANDARD;
    let signed = |created: &str, nonce: [u8; 16]| {
        let mut h = sha1::Sha1::new();
        h.update(nonce);
        h.update(created.as_bytes());
        h.update(opts.password.as_bytes());
        format!(
            "<s:Header><wsse:Security><wsse:UsernameToken><wsse:Username>{}</wsse:Username>\
             <wsse:Password Type=\"x#PasswordDigest\">{}</wsse:Password><wsse:Nonce>{}</wsse:Nonce>\
             <wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>",
            opts.username,
            b64.encode(h.finalize()),
            b64.encode(nonce)
        )
    };
    let post = |header: String| {
        let url = url.clone();
        async move {
            let body = format!(
                "<s:Envelope>{header}<s:Body><tptz:GetStatus><tptz:ProfileToken>Profile_000</tptz:ProfileToken>\
                 </tptz:GetStatus></s:Body></s:Envelope>"
            );
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/soap+xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .expect("fake answers");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    };
    let now = jiff::Timestamp::now();
    let fresh = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let stale = (now - jiff::SignedDuration::from_secs(600)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();

    let (status, body) = post(String::new()).await;
    assert!(status == 400 && body.contains("ter:NotAuthorized"), "unsigned: {status} {body}");
    let (status, _) = post(signed(&stale, [1; 16])).await;
    assert_eq!(status, 400, "stale Created accepted");
    let (status, body) = post(signed(&fresh, [2; 16])).await;
    assert_eq!(status, 200, "fresh, correctly signed request refused: {body}");
    let (status, _) = post(signed(&fresh, [2; 16])).await;
    assert_eq!(status, 400, "replayed nonce accepted");
    let ok: Vec<bool> = cam.requests().iter().map(|r| r.auth_ok).collect();
    assert_eq!(ok, [false, false, true, false]);
}
