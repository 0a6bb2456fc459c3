//! Tests of the PTZ client: WS-Security, reply parsing, fault handling and hostile camera text.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::client::PTZ_PATH;
use super::soap::*;
use super::*;

fn doc(s: &str) -> xml::Doc {
    xml::Doc::parse(s)
}

/// Expected value computed outside Rust: Python's hashlib over bytes 0..16 ‖ created ‖ password.
#[test]
fn password_digest_matches_an_independently_computed_vector() {
    let nonce: Vec<u8> = (0u8..16).collect();
    assert_eq!(BASE64.encode(&nonce), "AAECAwQFBgcICQoLDA0ODw==");
    assert_eq!(password_digest(&nonce, "2026-11-24T12:00:00Z", "Tr0ub4dor&3"), "nWob7FSAK9DRj3bkKzbkj7LDtCQ=");
}

#[test]
fn security_header_carries_digest_nonce_created_but_never_the_password() {
    let nonce: Vec<u8> = (0u8..16).collect();
    let h = SecurityHeader::new("ad<min", "Tr0ub4dor&3", &nonce, "2026-11-24T12:00:00Z");
    assert!(h.xml.contains("#PasswordDigest\">nWob7FSAK9DRj3bkKzbkj7LDtCQ=</wsse:Password>"), "{}", h.xml);
    assert!(h.xml.contains(">AAECAwQFBgcICQoLDA0ODw==</wsse:Nonce>"));
    assert!(h.xml.contains("<wsu:Created>2026-11-24T12:00:00Z</wsu:Created>"));
    assert!(h.xml.contains("<wsse:Username>ad&lt;min</wsse:Username>"));
    assert!(!h.xml.contains("Tr0ub4dor"));
}

#[test]
fn created_is_whole_second_utc() {
    let t = time::macros::datetime!(2026-11-24 13:00:00.987654 +01:00);
    assert_eq!(created_stamp(t), "2026-11-24T12:00:00Z");
}

#[test]
fn endpoint_debug_masks_the_password() {
    let ep = OnvifEndpoint {
        host: "cam".into(),
        port: 80,
        username: Some("admin".into()),
        password: Some(Secret::new("hunter2-long")),
        profile_token: None,
    };
    let client = PtzClient::new(ep.clone());
    assert!(!format!("{ep:?}").contains("hunter2"));
    assert!(!format!("{client:?}").contains("hunter2"));
}

#[test]
fn get_status_parses_whatever_the_prefixes() {
    let cases = [
        // ONVIF's own prefixes, with a Position block whose PanTilt/Zoom must not be mistaken for MoveStatus.
        r#"<?xml version="1.0"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>
           <tptz:GetStatusResponse><tptz:PTZStatus><tt:Position><tt:PanTilt x="0.1" y="0.2"/>
           <tt:Zoom x="0"/></tt:Position><tt:MoveStatus><tt:PanTilt>MOVING</tt:PanTilt>
           <tt:Zoom>IDLE</tt:Zoom></tt:MoveStatus></tptz:PTZStatus></tptz:GetStatusResponse></env:Body>
           </env:Envelope>"#,
        // Generated prefixes (gSOAP style) and no prefix at all on the inner elements.
        r#"<SOAP-ENV:Envelope><SOAP-ENV:Body><ns5:GetStatusResponse><ns5:PTZStatus><MoveStatus>
           <PanTilt> MOVING </PanTilt><Zoom>IDLE</Zoom></MoveStatus></ns5:PTZStatus></ns5:GetStatusResponse>
           </SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
    ];
    for c in cases {
        assert_eq!(
            parse_status(&doc(c)),
            Some(MoveStatus { pan_tilt: MoveState::Moving, zoom: MoveState::Idle }),
            "{c}"
        );
    }
}

#[test]
fn get_status_missing_elements_count_as_idle_and_odd_values_as_unknown() {
    let no_move = "<s:Envelope><s:Body><a:GetStatusResponse><a:PTZStatus><b:Position/></a:PTZStatus>\
                   </a:GetStatusResponse></s:Body></s:Envelope>";
    assert!(parse_status(&doc(no_move)).is_some_and(|s| s.is_idle()));
    let no_zoom = "<GetStatusResponse><PTZStatus><MoveStatus><PanTilt>IDLE</PanTilt></MoveStatus></PTZStatus>\
                   </GetStatusResponse>";
    assert!(parse_status(&doc(no_zoom)).is_some_and(|s| s.is_idle()));
    let bare = "<GetStatusResponse><PTZStatus><tt:MoveStatus>MOVING</tt:MoveStatus></PTZStatus></GetStatusResponse>";
    assert_eq!(parse_status(&doc(bare)), Some(MoveStatus { pan_tilt: MoveState::Moving, zoom: MoveState::Moving }));
    let odd = "<GetStatusResponse><MoveStatus><PanTilt>UNKNOWN</PanTilt><Zoom>spinning</Zoom></MoveStatus>\
               </GetStatusResponse>";
    let st = parse_status(&doc(odd)).expect("a status");
    assert_eq!((st.pan_tilt, st.zoom), (MoveState::Unknown, MoveState::Unknown));
    assert!(!st.is_idle());
}

#[test]
fn garbage_bodies_parse_to_nothing_without_panicking() {
    let bodies = [
        "",
        "<",
        "<<<>>>",
        "</GetStatusResponse>",
        "<html><body>404 Not Found</body></html>",
        "<GetStatusResponse attr=\"unterminated><MoveStatus>",
        "<![CDATA[",
        "<!--",
        "&&&;&#xFFFFFFFF;&#99999999999;&#;<a>&#x1F600;</a>",
        "<a b='>' c=\"x\" d=e f></a>",
        "\u{0}\u{ffff}<é:ü>ö</é:ü>",
    ];
    for b in bodies {
        let d = doc(b);
        let _ = (parse_fault(&d), parse_capabilities(&d), first_profile_token(&d));
        assert_eq!(parse_status(&d), None, "{b:?}");
    }
    // Arbitrary bytes, lossily decoded as a camera reply would be.
    const ALPHABET: &[u8] = b"<>/=:\"'&;#x![CDATA-? aZ\xc3\xa9";
    let mut state = 0x9E37_79B9u32;
    for _ in 0..200 {
        let bytes: Vec<u8> = (0..300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ALPHABET[state as usize % ALPHABET.len()]
            })
            .collect();
        let d = doc(&String::from_utf8_lossy(&bytes));
        let _ = (parse_status(&d), parse_fault(&d), parse_capabilities(&d), first_profile_token(&d));
    }
}

#[test]
fn capabilities_give_ptz_and_media_xaddrs() {
    let body = r#"<env:Envelope><env:Body><tds:GetCapabilitiesResponse><tds:Capabilities>
        <tt:Analytics><tt:XAddr>http://10.0.0.5/onvif/analytics</tt:XAddr></tt:Analytics>
        <tt:Device><tt:XAddr>http://10.0.0.5/onvif/device_service</tt:XAddr></tt:Device>
        <tt:Media><tt:XAddr>http://10.0.0.5/onvif/Media</tt:XAddr><tt:StreamingCapabilities/></tt:Media>
        <tt:PTZ><tt:XAddr> http://10.0.0.5:8899/onvif/PTZ </tt:XAddr></tt:PTZ>
        </tds:Capabilities></tds:GetCapabilitiesResponse></env:Body></env:Envelope>"#;
    let caps = parse_capabilities(&doc(body));
    assert_eq!(caps.ptz.as_deref(), Some("http://10.0.0.5:8899/onvif/PTZ"));
    assert_eq!(caps.media.as_deref(), Some("http://10.0.0.5/onvif/Media"));
    let no_ptz = "<Envelope><Body><GetCapabilitiesResponse><Capabilities><Media><XAddr>http://h/m</XAddr>\
                  </Media></Capabilities></GetCapabilitiesResponse></Body></Envelope>";
    assert_eq!(parse_capabilities(&doc(no_ptz)), Capabilities { ptz: None, media: Some("http://h/m".into()) });
}

#[test]
fn service_urls_keep_the_xaddr_path_but_stay_on_the_configured_camera() {
    let client = PtzClient::new(OnvifEndpoint {
        host: "cam.example".into(),
        port: 8899,
        username: None,
        password: None,
        profile_token: None,
    });
    // A camera behind port forwarding advertises its private address; an evil one another host entirely.
    assert_eq!(
        client.service_url(Some("http://192.168.1.64/onvif/PTZ"), PTZ_PATH),
        "http://cam.example:8899/onvif/PTZ"
    );
    assert_eq!(client.service_url(Some("http://evil.example:80/x?y=1"), PTZ_PATH), "http://cam.example:8899/x?y=1");
    for junk in [None, Some(""), Some("not a url"), Some("ftp://h/p"), Some("http://h")] {
        assert_eq!(client.service_url(junk, PTZ_PATH), "http://cam.example:8899/onvif/ptz_service", "{junk:?}");
    }
    assert_eq!(authority("fe80::1", 80), "[fe80::1]:80");
}

#[test]
fn profiles_give_the_first_token() {
    let body = r#"<s:Envelope><s:Body><trt:GetProfilesResponse>
        <trt:Profiles fixed="true" token="Profile&amp;1"><tt:Name>main</tt:Name>
        <tt:PTZConfiguration token="ptz0"/></trt:Profiles>
        <trt:Profiles token='Profile_2'><tt:Name>sub</tt:Name></trt:Profiles>
        </trt:GetProfilesResponse></s:Body></s:Envelope>"#;
    assert_eq!(first_profile_token(&doc(body)).as_deref(), Some("Profile&1"));
    let none = "<GetProfilesResponse><Profiles fixed=\"true\"/></GetProfilesResponse>";
    assert_eq!(first_profile_token(&doc(none)), None);
}

#[test]
fn faults_are_classified_auth_or_other() {
    let fault = |code: &str, reason: &str| {
        format!(
            "<env:Envelope><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode>\
             <env:Value>{code}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">\
             {reason}</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"
        )
    };
    let auth =
        check_reply("cam:80", "GetStatus", 400, &doc(&fault("ter:NotAuthorized", "Sender not authorized")), None);
    assert!(matches!(auth, Err(PtzError::Auth { .. })), "{auth:?}");
    let wsse = check_reply("cam:80", "GetStatus", 500, &doc(&fault("wsse:FailedAuthentication", "no")), None);
    assert!(matches!(wsse, Err(PtzError::Auth { .. })), "{wsse:?}");
    match check_reply("cam:80", "GotoPreset", 500, &doc(&fault("ter:InvalidArgVal", "No &lt;preset&gt;")), None) {
        Err(PtzError::Fault { code, reason, camera, action }) => {
            assert_eq!((code.as_str(), reason.as_str()), ("Sender/InvalidArgVal", "No <preset>"));
            assert_eq!((camera.as_str(), action), ("cam:80", "GotoPreset"));
        }
        other => panic!("{other:?}"),
    }
    let soap11 = "<Envelope><Body><Fault><faultcode>SOAP-ENV:Client</faultcode><faultstring>bad</faultstring>\
                  </Fault></Body></Envelope>";
    assert!(matches!(
        check_reply("c:1", "GetStatus", 500, &doc(soap11), None),
        Err(PtzError::Fault { code, .. }) if code == "Client"
    ));
    assert!(matches!(check_reply("c:1", "GetStatus", 401, &doc(""), None), Err(PtzError::Auth { .. })));
    assert!(matches!(check_reply("c:1", "GetStatus", 404, &doc("<html/>"), None), Err(PtzError::BadResponse { .. })));
    assert!(check_reply("c:1", "GetStatus", 200, &doc("<x/>"), None).is_ok());
}

#[test]
fn a_fault_echoing_our_digest_or_nonce_does_not_leak_them() {
    let nonce = [7u8; 16];
    let h = SecurityHeader::new("admin", "pw", &nonce, "2026-11-24T12:00:00Z");
    let reason = format!("bad token {} nonce {}\nforged log line", h.digest_b64, h.nonce_b64);
    let body = format!(
        "<Envelope><Body><Fault><faultcode>X</faultcode><faultstring>{reason}</faultstring></Fault></Body>\
         </Envelope>"
    );
    let err = check_reply("c:1", "GetStatus", 500, &doc(&body), Some(&h)).expect_err("a fault");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&h.digest_b64) && !shown.contains(&h.nonce_b64), "{shown}");
    assert!(!shown.contains('\n'), "{shown}");
}

#[test]
fn long_camera_text_is_cut() {
    let long = "x".repeat(10_000);
    assert!(bounded(&long).chars().count() <= MAX_DETAIL + 1);
}

#[test]
fn tokens_cannot_inject_xml() {
    assert_eq!(escape("1</tptz:PresetToken><x>&"), "1&lt;/tptz:PresetToken&gt;&lt;x&gt;&amp;");
    assert_eq!(xml::decode(&escape("a<b>&\"'")), "a<b>&\"'");
}
