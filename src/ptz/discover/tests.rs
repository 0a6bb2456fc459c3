//! Tests of the WS-Discovery probe and answer parser, and of reading GetProfiles/GetStreamUri replies:
//! real-looking answers from several vendors, and hostile ones.

use proptest::prelude::*;

use super::describe::{profiles, stream_uri};
use super::*;

const ID: &str = "uuid:0b9f0c52-6a4e-4f6f-9d2e-000000000001";

/// A ProbeMatches as a Hikvision-style camera sends it (gSOAP prefixes), answering `relates_to`.
fn answer(relates_to: &str, endpoint: &str, xaddrs: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:wsadis="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">
<env:Header><wsadis:MessageID>urn:uuid:11111111-2222-3333-4444-555555555555</wsadis:MessageID>
<wsadis:RelatesTo>{relates_to}</wsadis:RelatesTo><wsadis:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsadis:To>
<wsadis:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsadis:Action></env:Header>
<env:Body><d:ProbeMatches><d:ProbeMatch><wsadis:EndpointReference><wsadis:Address>{endpoint}</wsadis:Address>
</wsadis:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>
<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming onvif://www.onvif.org/hardware/DS-2CD2142FWD-I onvif://www.onvif.org/name/HIKVISION%20Front%20Door onvif://www.onvif.org/location/city/hangzhou</d:Scopes>
<d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>10</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>"#
    )
}

#[test]
fn the_probe_asks_for_video_transmitters_with_our_message_id() {
    let m = probe_message(ID);
    assert!(m.contains("<d:Types>dn:NetworkVideoTransmitter</d:Types>"), "{m}");
    assert!(m.contains(&format!("<a:MessageID>{ID}</a:MessageID>")));
    assert!(m.contains("http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>"));
    assert!(m.contains("xmlns:dn=\"http://www.onvif.org/ver10/network/wsdl\""));
    let (a, b) = (new_message_id(), new_message_id());
    assert!(a.starts_with("uuid:") && a != b);
}

#[test]
fn a_camera_answer_gives_its_endpoint_addresses_and_scopes() {
    let a =
        answer(ID, "urn:uuid:cam-1", "http://192.168.1.64/onvif/device_service http://[fe80::1]/onvif/device_service");
    let m = parse_probe_matches(a.as_bytes(), ID);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].endpoint, "urn:uuid:cam-1");
    assert_eq!(m[0].xaddrs, ["http://192.168.1.64/onvif/device_service", "http://[fe80::1]/onvif/device_service"]);
    assert_eq!(m[0].scopes.hardware.as_deref(), Some("DS-2CD2142FWD-I"));
    assert_eq!(m[0].scopes.name.as_deref(), Some("HIKVISION Front Door"));
    assert_eq!(m[0].scopes.location.as_deref(), Some("city/hangzhou"));
}

#[test]
fn an_answer_without_relates_to_is_taken_one_for_another_probe_is_not() {
    let a = answer(ID, "urn:uuid:cam-1", "http://10.0.0.2/onvif/device_service");
    let no_relates = a.replace(&format!("<wsadis:RelatesTo>{ID}</wsadis:RelatesTo>"), "");
    assert_eq!(parse_probe_matches(no_relates.as_bytes(), ID).len(), 1);
    assert!(parse_probe_matches(a.as_bytes(), "uuid:another-probe").is_empty());
}

#[test]
fn only_http_xaddrs_count_and_a_match_without_one_is_dropped() {
    let a =
        answer(ID, "urn:uuid:x", "ftp://10.0.0.2/x javascript:alert(1) http://user:pw@10.0.0.2/ file:///etc/passwd");
    assert!(parse_probe_matches(a.as_bytes(), ID).is_empty());
    let a = answer(ID, "urn:uuid:x", "rtsp://10.0.0.2/ https://10.0.0.2:8443/onvif/device_service");
    let m = parse_probe_matches(a.as_bytes(), ID);
    assert_eq!(m[0].xaddrs, ["https://10.0.0.2:8443/onvif/device_service"]);
}

#[test]
fn a_match_without_an_endpoint_reference_is_dropped() {
    let a = answer(ID, "", "http://10.0.0.2/onvif/device_service");
    assert!(parse_probe_matches(a.as_bytes(), ID).is_empty());
    let a = answer(ID, "urn:uuid:a\u{1b}[2Jb", "http://10.0.0.2/onvif/device_service");
    assert!(parse_probe_matches(a.as_bytes(), ID).is_empty());
}

#[test]
fn oversized_and_tag_heavy_answers_are_not_parsed() {
    let good = answer(ID, "urn:uuid:x", "http://10.0.0.2/onvif/device_service");
    let padded = format!("{good}{}", " ".repeat(MAX_ANSWER));
    assert!(parse_probe_matches(padded.as_bytes(), ID).is_empty());
    let deep = format!("{}{good}", "<a>".repeat(MAX_TAGS));
    assert!(parse_probe_matches(deep.as_bytes(), ID).is_empty());
}

#[test]
fn the_collector_dedupes_by_endpoint_and_counts_what_it_ignores() {
    let mut c = Collector::new(ID.to_string());
    let from: SocketAddr = "127.0.0.1:3702".parse().unwrap();
    let a = answer(ID, "urn:uuid:a", "http://127.0.0.1:1/onvif/device_service");
    // The same camera again, differently worded (another MetadataVersion): still one camera.
    let a2 = a.replace("<d:MetadataVersion>10", "<d:MetadataVersion>11");
    let b = answer(ID, "urn:uuid:b", "http://127.0.0.1:2/onvif/device_service");
    for d in [&a, &a, &a2, &b, &"garbage".to_string()] {
        c.take(d.as_bytes(), from, false);
    }
    c.take(b"x", from, true);
    let r = c.report();
    let eps: Vec<&str> = r.cameras.iter().map(|a| a.found.endpoint.as_str()).collect();
    assert_eq!(eps, ["urn:uuid:a", "urn:uuid:b"]);
    assert_eq!(r.ignored, 2, "the garbage and the truncated datagram");
}

#[test]
fn a_flood_is_bounded() {
    let mut c = Collector::new(ID.to_string());
    let from: SocketAddr = "127.0.0.1:3702".parse().unwrap();
    for i in 0..(MAX_ANSWERS + 100) {
        let a = answer(ID, &format!("urn:uuid:{i}"), "http://127.0.0.1:1/onvif/device_service");
        c.take(a.as_bytes(), from, false);
    }
    let r = c.report();
    assert_eq!(r.cameras.len(), MAX_CAMERAS);
    assert_eq!(r.ignored, MAX_ANSWERS + 100 - MAX_CAMERAS);
}

#[test]
fn profiles_and_stream_uris_are_read_and_checked() {
    let doc = xml::Doc::parse(
        r#"<e:Envelope><e:Body><trt:GetProfilesResponse>
        <trt:Profiles token="Profile_1" fixed="true"><tt:Name>mainStream</tt:Name>
          <tt:VideoEncoderConfiguration token="V1"><tt:Name>enc</tt:Name><tt:Encoding>H264</tt:Encoding>
          <tt:Resolution><tt:Width>1920</tt:Width><tt:Height>1080</tt:Height></tt:Resolution></tt:VideoEncoderConfiguration>
        </trt:Profiles>
        <trt:Profiles token=""><tt:Name>no token</tt:Name></trt:Profiles>
        <trt:Profiles token="Profile_2"><tt:Name>subStream</tt:Name></trt:Profiles>
        </trt:GetProfilesResponse></e:Body></e:Envelope>"#,
    );
    let p = profiles(&doc);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!((p[0].profile.as_str(), p[0].name.as_deref()), ("Profile_1", Some("mainStream")));
    assert_eq!((p[0].encoding.as_deref(), p[0].width, p[0].height), (Some("H264"), Some(1920), Some(1080)));
    assert_eq!((p[1].profile.as_str(), p[1].width), ("Profile_2", None));

    let uri = |u: &str| {
        stream_uri(&xml::Doc::parse(&format!(
            "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{u}</tt:Uri></trt:MediaUri></trt:GetStreamUriResponse>"
        )))
    };
    assert_eq!(
        uri("rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&amp;profile=Profile_1").as_deref(),
        Some("rtsp://192.168.1.64:554/Streaming/Channels/101?transportmode=unicast&profile=Profile_1")
    );
    assert_eq!(uri("rtsp://admin:hunter2@10.0.0.2/live").as_deref(), Some("rtsp://10.0.0.2/live"));
    assert_eq!(uri("http://10.0.0.2/live"), None);
    assert_eq!(uri("rtsp://10.0.0.2/a b"), None);
    assert_eq!(uri(&format!("rtsp://10.0.0.2/{}", "a".repeat(2000))), None);
}

#[test]
fn loopback_is_never_probed_by_default() {
    assert!(!default_interfaces().contains(&Ipv4Addr::LOCALHOST));
}

fn found(address: &str, url: &str) -> DiscoveredCamera {
    DiscoveredCamera {
        address: address.into(),
        endpoint: format!("urn:uuid:{address}"),
        xaddrs: vec![],
        onvif_url: None,
        onvif_host: Some(address.into()),
        onvif_port: Some(80),
        manufacturer: None,
        model: None,
        firmware: None,
        scopes: Scopes::default(),
        streams: vec![StreamProfile {
            profile: "p".into(),
            name: None,
            url: url.into(),
            encoding: None,
            width: None,
            height: None,
        }],
        note: None,
        add_command: None,
    }
}

#[test]
fn add_lines_have_unique_ids_quoted_values_and_never_a_password() {
    let mut cams = vec![
        found("192.168.1.20", "rtsp://192.168.1.20/a?x=1&y=2"),
        found("192.168.1.20", "rtsp://192.168.1.20/it's"),
        found("fe80::1", "rtsp://[fe80::1]/s"),
    ];
    cams.push(DiscoveredCamera { streams: vec![], ..found("10.0.0.9", "") });
    add_commands(&mut cams, Some("o'brien"));
    let lines: Vec<&str> = cams.iter().filter_map(|c| c.add_command.as_deref()).collect();
    assert_eq!(
        lines,
        [
            "vistter-agent camera add cam-192-168-1-20 --url 'rtsp://192.168.1.20/a?x=1&y=2' \
             --username 'o'\\''brien' --password-stdin --onvif-host '192.168.1.20' --onvif-port 80",
            "vistter-agent camera add cam-192-168-1-20-2 --url 'rtsp://192.168.1.20/it'\\''s' \
             --username 'o'\\''brien' --password-stdin --onvif-host '192.168.1.20' --onvif-port 80",
            "vistter-agent camera add cam-fe80--1 --url 'rtsp://[fe80::1]/s' --username 'o'\\''brien' \
             --password-stdin --onvif-host 'fe80::1' --onvif-port 80",
        ]
    );
    assert!(cams[3].add_command.is_none(), "no stream, no line");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever arrives, the parser returns (no panic) and everything it returns is usable.
    #[test]
    fn any_datagram_parses_to_usable_matches_or_nothing(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for m in parse_probe_matches(&data, ID) {
            prop_assert!(!m.endpoint.is_empty());
            prop_assert!(!m.xaddrs.is_empty());
            prop_assert!(m.xaddrs.iter().all(|x| x.starts_with("http://") || x.starts_with("https://")));
        }
    }

    /// A real answer mutated anywhere (cut, spliced with junk) never panics and never yields a non-http XAddr.
    #[test]
    fn a_mutated_answer_never_panics(cut in 0usize..2000, junk in "[<>/a-zA-Z:=\"' &;#x0-9]{0,64}", at in 0usize..2000) {
        let a = answer(ID, "urn:uuid:x", "http://10.0.0.2/onvif/device_service");
        let cut = cut.min(a.len());
        let at = at.min(cut);
        let mut bytes = a.as_bytes()[..cut].to_vec();
        bytes.splice(at..at, junk.bytes());
        for m in parse_probe_matches(&bytes, ID) {
            prop_assert!(m.xaddrs.iter().all(|x| x.starts_with("http://") || x.starts_with("https://")));
        }
    }

    /// Replies to GetProfiles/GetStreamUri of any shape: no panic, only rtsp(s) URLs without credentials.
    #[test]
    fn any_media_reply_is_read_safely(s in "(<[a-zA-Z:]{1,12}( token=\"[a-z0-9]{0,4}\")?>|</[a-zA-Z:]{1,12}>|rtsp://[a-z@:]{0,12}/x|[ a-z0-9]{0,8}){0,60}") {
        let doc = xml::Doc::parse(&s);
        prop_assert!(profiles(&doc).len() <= 8);
        if let Some(u) = stream_uri(&doc) {
            prop_assert!(u.starts_with("rtsp://") || u.starts_with("rtsps://"));
            prop_assert!(!u.contains('@'), "{}", u);
        }
    }
}
