//! Property tests of every parser of untrusted input: whatever a client
//! sends, a parser answers (never panics), and a refusal is a 4xx. Where a
//! valid input has an obvious meaning, it round-trips.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use reelay_api::{
    auth::{Role, Verifier, issue_with_role},
    cursor,
    engagement::events,
    error::ApiError,
    text,
    video::tus::{self, Checksum},
};
use uuid::Uuid;

/// What a client can put in a header: any byte HTTP allows there.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(
        prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
        0..300,
    )
    .prop_map(|bytes| HeaderValue::from_bytes(&bytes).expect("header bytes"))
}

fn headers(name: &'static str, values: Vec<HeaderValue>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(name, value);
    }
    map
}

fn client_error(error: &ApiError) -> bool {
    error.status().is_client_error()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn upload_metadata_is_parsed_or_refused_with_a_4xx(values in prop::collection::vec(header_value(), 0..3)) {
        if let Err(e) = tus::metadata(&headers("upload-metadata", values)) {
            prop_assert!(client_error(&e), "{e}");
        }
    }

    #[test]
    fn upload_metadata_of_keys_and_base64_values_reads_back(
        filename in "[^\u{0}]{0,200}",
        title in prop::option::of("[^\u{0}]{1,200}"),
        unknown in prop::collection::vec(any::<u8>(), 0..1024),
        onboarding in any::<bool>(),
    ) {
        let mut pairs = vec![
            format!("filename {}", STANDARD.encode(&filename)),
            format!("x-unknown {}", STANDARD.encode(&unknown)),
        ];
        if let Some(title) = &title {
            pairs.push(format!("title {}", STANDARD.encode(title)));
        }
        if onboarding {
            pairs.push("onboarding".into());
        }
        let raw = pairs.join(",");
        let parsed = tus::metadata(&headers("upload-metadata", vec![raw.parse().expect("ASCII")]));
        if raw.len() > 8 * 1024 {
            prop_assert!(parsed.is_err());
        } else {
            let parsed = parsed.expect("valid metadata");
            prop_assert_eq!(parsed.filename.as_deref(), Some(filename.as_str()));
            prop_assert_eq!(parsed.title, title);
            prop_assert_eq!(parsed.onboarding, onboarding);
        }
    }

    #[test]
    fn upload_checksum_is_parsed_or_refused_with_a_4xx(values in prop::collection::vec(header_value(), 0..3)) {
        if let Err(e) = tus::checksum(&headers("upload-checksum", values)) {
            prop_assert!(client_error(&e), "{e}");
        }
    }

    #[test]
    fn a_sha256_checksum_reads_back(digest in prop::array::uniform32(any::<u8>())) {
        let value = format!("sha256 {}", STANDARD.encode(digest)).parse().expect("ASCII");
        prop_assert_eq!(
            tus::checksum(&headers("upload-checksum", vec![value])).expect("valid"),
            Some(Checksum::Sha256(digest.to_vec()))
        );
    }

    #[test]
    fn offsets_and_lengths_are_plain_digits_or_a_4xx(values in prop::collection::vec(header_value(), 0..3)) {
        let single = values.len() == 1;
        let text = values.first().and_then(|v| v.to_str().ok()).map(str::to_owned);
        match tus::number(&headers("upload-offset", values), "Upload-Offset") {
            Ok(Some(n)) => {
                let text = text.expect("a value");
                prop_assert!(single && text.bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(text.parse::<u64>(), Ok(n));
            }
            Ok(None) => prop_assert!(text.is_none()),
            Err(e) => prop_assert!(client_error(&e), "{e}"),
        }
    }

    #[test]
    fn any_u64_offset_reads_back(n in any::<u64>()) {
        prop_assert_eq!(
            tus::number(&headers("upload-length", vec![HeaderValue::from(n)]), "Upload-Length").expect("valid"),
            Some(n)
        );
    }

    #[test]
    fn tus_resumable_is_1_0_0_or_a_412(value in header_value()) {
        let exact = value == "1.0.0";
        match tus::require_resumable(&headers("tus-resumable", vec![value])) {
            Ok(()) => prop_assert!(exact),
            Err(e) => prop_assert!(!exact && client_error(&e), "{e}"),
        }
    }

    #[test]
    fn bearer_tokens_that_are_not_ours_are_a_401(token in ".{0,400}") {
        let verifier = Verifier::new("secret", None, Duration::from_secs(60)).expect("verifier");
        let e = verifier.verify(&token).expect_err("never valid");
        prop_assert_eq!(e.status().as_u16(), 401);
    }

    #[test]
    fn a_token_with_any_byte_changed_is_a_401(at in any::<prop::sample::Index>(), to in "[A-Za-z0-9_.-]") {
        let verifier = Verifier::new("secret", None, Duration::from_secs(60)).expect("verifier");
        let token = issue_with_role("secret", Uuid::new_v4(), Role::Admin, 600).expect("token");
        let i = at.index(token.len());
        let mut forged = token.clone();
        forged.replace_range(i..=i, &to);
        // Base64url's last character of a part can carry unused bits: a
        // change there may decode to the same bytes, and then it is the same
        // token. Anything else must be refused.
        let decoded = |t: &str| -> Vec<Option<Vec<u8>>> {
            t.split('.').map(|part| URL_SAFE_NO_PAD.decode(part).ok()).collect()
        };
        if decoded(&forged) != decoded(&token) {
            prop_assert_eq!(verifier.verify(&forged).expect_err("forged").status().as_u16(), 401);
        }
    }

    #[test]
    fn cursors_are_ours_or_a_400(text in ".{0,200}") {
        if let Err(e) = cursor::decode(&text) {
            prop_assert_eq!(e.status().as_u16(), 400);
        }
    }

    /// The document promises that any string of `cursor::PATTERN`'s shape
    /// is a cursor (schemathesis sends such strings as valid).
    #[test]
    fn every_cursor_of_the_documented_shape_is_taken(text in "[0-9]{1,16}\\.[0-9a-f]{32}") {
        prop_assert!(cursor::decode(&text).is_ok(), "{}", text);
    }

    #[test]
    fn a_cursor_reads_back(micros in 0i64..4_102_444_800_000_000, id in any::<u128>()) {
        let at = DateTime::<Utc>::from_timestamp_micros(micros).expect("in range");
        let id = Uuid::from_u128(id);
        prop_assert_eq!(cursor::decode(&cursor::encode(at, id)).expect("ours"), (at, id));
    }

    #[test]
    fn page_limits_are_1_to_100_or_a_400(limit in any::<Option<i64>>()) {
        match cursor::limit(limit) {
            Ok(n) => prop_assert!((1..=100).contains(&n)),
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
        }
    }

    #[test]
    fn user_text_is_kept_or_a_400_naming_the_field(value in ".{0,300}") {
        match text::check("title", &value, 200) {
            Ok(()) => prop_assert!(!value.contains('\0') && value.chars().count() <= 200),
            Err(e) => {
                prop_assert_eq!(e.status().as_u16(), 400);
                prop_assert!(e.to_string().contains("title"));
            }
        }
    }

    #[test]
    fn player_event_bodies_of_any_bytes_are_read_or_a_400(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = events::parse(&body) {
            prop_assert_eq!(e.status().as_u16(), 400);
        }
    }

    #[test]
    fn player_event_bodies_of_any_json_are_read_or_a_400(body in json()) {
        if let Err(e) = events::parse(body.to_string().as_bytes()) {
            prop_assert_eq!(e.status().as_u16(), 400);
        }
    }
}

/// Any JSON, and events-shaped JSON often enough to reach the fields.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        Just(json!(Uuid::new_v4().to_string())),
        Just(json!("position")),
        Just(json!("2026-11-25T12:00:00Z")),
    ];
    let any_json = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event_id".to_owned()),
                    Just("session_id".to_owned()),
                    Just("video_id".to_owned()),
                    Just("type".to_owned()),
                    Just("playhead_ms".to_owned()),
                    Just("client_time".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        any_json.clone(),
        prop::collection::vec(any_json, 0..4).prop_map(|events| json!({ "events": events })),
    ]
}
