//! Presigned S3 GET URLs (SigV4, query string), made locally and fast: the
//! feed's batch of 500 links and every segment of an HLS playlist are
//! presigned per request. The signing key depends only on the secret, the
//! day, the region and the service, so it is derived once a day (four
//! HMACs) instead of per URL; a URL then costs one SHA-256 of its canonical
//! request and one HMAC. The same URLs object_store makes (a test compares
//! them byte for byte), path-style as configured for Garage.

use std::{
    fmt::Write,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::S3Config;

type HmacSha256 = Hmac<Sha256>;

/// The longest life SigV4 allows a presigned URL.
pub const MAX_EXPIRES: Duration = Duration::from_secs(7 * 24 * 3600);

/// A day (`yyyymmdd`) and the signing key derived for it.
type DayKey = (String, [u8; 32]);

#[derive(Clone)]
pub struct Presigner {
    /// `http://host:port`, no trailing slash.
    endpoint: String,
    /// The same, as it is written inside a JSON string.
    endpoint_json: String,
    /// What the Host header will be (host, with the port when not default).
    host: String,
    /// The endpoint's own path, if it has one (a proxy's prefix).
    base_path: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    /// The day (`yyyymmdd`) and its signing key.
    /// Read by every URL, written once a day: a read lock never waits.
    day_key: Arc<RwLock<Option<DayKey>>>,
}

impl Presigner {
    /// The endpoint as a browser will send it: scheme, lowercase host, the
    /// port only when not the scheme's default, and any path prefix.
    pub fn new(config: &S3Config) -> Self {
        let (endpoint, host, base_path) = match reqwest::Url::parse(&config.endpoint) {
            Ok(url) => {
                let host = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_owned(),
                };
                let base_path = url.path().trim_end_matches('/').to_owned();
                (format!("{}://{host}", url.scheme()), host, base_path)
            }
            // Not a URL (S3Config::read does not insist): kept as written.
            Err(_) => (
                config.endpoint.trim_end_matches('/').to_owned(),
                String::new(),
                String::new(),
            ),
        };
        let quoted = serde_json::to_string(&endpoint).expect("a string serializes");
        Self {
            endpoint_json: quoted[1..quoted.len() - 1].to_owned(),
            endpoint,
            host,
            base_path,
            bucket: config.bucket.clone(),
            region: config.region.clone(),
            access_key_id: config.access_key_id.clone(),
            secret_access_key: config.secret_access_key.clone(),
            day_key: Arc::new(RwLock::new(None)),
        }
    }

    /// A presigned GET of `key` (the full object key), valid for `ttl`
    /// (at most seven days).
    pub fn get(&self, key: &str, ttl: Duration) -> String {
        self.signer(ttl).url(key)
    }

    /// Signs many URLs valid for `ttl` (at most seven days) from now: what
    /// is the same for all of them is made once.
    pub fn signer(&self, ttl: Duration) -> Signer<'_> {
        self.signer_at(ttl, Utc::now())
    }

    fn signer_at(&self, ttl: Duration, now: DateTime<Utc>) -> Signer<'_> {
        let now = now.trunc_subsecs(0);
        let day = now.format("%Y%m%d").to_string();
        let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let mut query = String::with_capacity(256);
        query.push_str("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
        encode(&mut query, &format!("{}/{scope}", self.access_key_id), true);
        let _ = write!(
            query,
            "&X-Amz-Date={stamp}&X-Amz-Expires={}&X-Amz-SignedHeaders=host",
            ttl.min(MAX_EXPIRES).as_secs()
        );
        let mut mac =
            HmacSha256::new_from_slice(&self.signing_key(&day)).expect("HMAC takes any key length");
        mac.update(format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n").as_bytes());
        Signer {
            presigner: self,
            signed_at: now,
            canonical_tail: format!("\n{query}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD", self.host),
            query,
            mac,
            scratch: String::with_capacity(512),
        }
    }

    /// The day's signing key, derived once a day.
    fn signing_key(&self, day: &str) -> [u8; 32] {
        if let Some((cached_day, key)) = self.day_key.read().expect("not poisoned").as_ref()
            && cached_day == day
        {
            return *key;
        }
        let hmac = |key: &[u8], data: &[u8]| -> [u8; 32] {
            let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(data);
            mac.finalize().into_bytes().into()
        };
        let key = hmac(
            &hmac(
                &hmac(
                    &hmac(
                        format!("AWS4{}", self.secret_access_key).as_bytes(),
                        day.as_bytes(),
                    ),
                    self.region.as_bytes(),
                ),
                b"s3",
            ),
            b"aws4_request",
        );
        *self.day_key.write().expect("not poisoned") = Some((day.to_owned(), key));
        key
    }
}

/// URLs signed at one second for one life: per URL, its path, one SHA-256
/// and the end of one HMAC (keyed, and fed the string-to-sign's head, once).
pub struct Signer<'a> {
    presigner: &'a Presigner,
    signed_at: DateTime<Utc>,
    /// The query up to the signature.
    query: String,
    /// The canonical request after the path.
    canonical_tail: String,
    /// Keyed with the day's signing key and fed the string to sign up to
    /// the canonical request's digest.
    mac: HmacSha256,
    scratch: String,
}

impl Signer<'_> {
    /// The second the URLs are signed at (their X-Amz-Date): they expire
    /// their life after it.
    pub fn signed_at(&self) -> DateTime<Utc> {
        self.signed_at
    }

    /// A presigned GET of `key`.
    pub fn url(&mut self, key: &str) -> String {
        let p = self.presigner;
        let mut url = String::with_capacity(
            p.endpoint.len()
                + p.base_path.len()
                + p.bucket.len()
                + key.len()
                + self.query.len()
                + 96,
        );
        self.push(key, &p.endpoint, &mut url);
        url
    }

    /// Appends the presigned GET of `key` to `out` as it is written inside
    /// a JSON string: the URL's other characters never need escaping (the
    /// path and the query are percent-encoded; the endpoint is escaped
    /// once, in `Presigner::new`).
    pub fn push_json(&mut self, key: &str, out: &mut String) {
        let p = self.presigner;
        self.push(key, &p.endpoint_json, out);
    }

    fn push(&mut self, key: &str, endpoint: &str, out: &mut String) {
        let p = self.presigner;
        out.push_str(endpoint);
        let path_start = out.len();
        encode(out, &p.base_path, false);
        out.push('/');
        encode(out, &p.bucket, false);
        out.push('/');
        encode(out, key, false);
        let canonical = &mut self.scratch;
        canonical.clear();
        canonical.push_str("GET\n");
        canonical.push_str(&out[path_start..]);
        canonical.push_str(&self.canonical_tail);
        let digest = Sha256::digest(canonical.as_bytes());
        let mut mac = self.mac.clone();
        mac.update(&hex_lower(&digest));
        out.push('?');
        out.push_str(&self.query);
        out.push_str("&X-Amz-Signature=");
        let signature = hex_lower(&mac.finalize().into_bytes());
        out.push_str(std::str::from_utf8(&signature).expect("hex is ASCII"));
    }
}

/// Lowercase hex of a 32-byte digest, without an allocation.
fn hex_lower(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    hex::encode_to_slice(bytes, &mut out).expect("32 bytes");
    out
}

/// SigV4's URI encoding: every byte but `A-Za-z0-9-._~` as `%XX`; `/` kept
/// in paths and encoded in query values.
fn encode(out: &mut String, text: &str, slash: bool) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b'/' if !slash => out.push('/'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 15)] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::signer::Signer;

    use super::*;
    use crate::{config::Env, storage::Storage};

    fn config() -> S3Config {
        S3Config::read(&Env::of([("REELAY_S3_PREFIX", "t")])).expect("config")
    }

    /// object_store reads the clock itself: compare within one second.
    #[tokio::test]
    async fn the_urls_are_object_stores_byte_for_byte() {
        let config = config();
        let storage = Storage::new(&config).expect("storage");
        let ours = Presigner::new(&config);
        for key in [
            "t/videos/01a2133c-d229-7055-a2ef-180e9b819b9f/original",
            "t/videos/x/streams/abc/hls/720p/segment-00001.m4s",
            // object_store percent-encodes `%` and non-ASCII in its own Path
            // first (a different key); our keys never hold them.
            "t/x/with spaces+plus=eq",
        ] {
            let ttl = Duration::from_secs(900);
            let mut same = false;
            for _ in 0..5 {
                let now = Utc::now();
                let theirs = storage
                    .s3
                    .signed_url(
                        reqwest::Method::GET,
                        &object_store::path::Path::from(key),
                        ttl,
                    )
                    .await
                    .expect("presign")
                    .to_string();
                let mine = ours.signer_at(ttl, now).url(key);
                if theirs.contains(&now.format("X-Amz-Date=%Y%m%dT%H%M%SZ").to_string()) {
                    assert_eq!(mine, theirs, "{key}");
                    same = true;
                    break;
                }
            }
            assert!(same, "compared within one second for {key}");
        }
    }

    #[test]
    fn a_url_written_into_json_is_the_url_escaped() {
        let ours = Presigner::new(&config());
        let now = Utc::now();
        for key in ["t/videos/x/original", "t/x/with spaces+\"quote\"\\"] {
            let url = ours.signer_at(Duration::from_secs(60), now).url(key);
            let mut json = String::from("\"");
            ours.signer_at(Duration::from_secs(60), now)
                .push_json(key, &mut json);
            json.push('"');
            assert_eq!(json, serde_json::to_string(&url).unwrap());
        }
        // An endpoint that is not a URL is kept as written, and escaped.
        let mut odd = config();
        odd.endpoint = "not a url \"x\"\\".into();
        let ours = Presigner::new(&odd);
        let url = ours.signer_at(Duration::from_secs(60), now).url("k");
        assert!(url.starts_with("not a url \"x\"\\/"), "{url}");
        let mut json = String::from("\"");
        ours.signer_at(Duration::from_secs(60), now)
            .push_json("k", &mut json);
        json.push('"');
        assert_eq!(json, serde_json::to_string(&url).unwrap());
    }

    #[test]
    fn the_host_is_what_a_client_sends() {
        let with = |endpoint: &str| {
            let mut config = config();
            config.endpoint = endpoint.into();
            let p = Presigner::new(&config);
            (p.endpoint, p.host, p.base_path)
        };
        assert_eq!(
            with("https://S3.Example.com:443/"),
            (
                "https://s3.example.com".into(),
                "s3.example.com".into(),
                String::new()
            )
        );
        assert_eq!(
            with("http://127.0.0.1:3900"),
            (
                "http://127.0.0.1:3900".into(),
                "127.0.0.1:3900".into(),
                String::new()
            )
        );
        assert_eq!(
            with("http://proxy.local/s3/"),
            (
                "http://proxy.local".into(),
                "proxy.local".into(),
                "/s3".into()
            )
        );
    }

    #[test]
    fn the_signing_key_is_derived_once_a_day() {
        let ours = Presigner::new(&config());
        let now = Utc::now();
        let first = ours.signer_at(Duration::from_secs(60), now).url("k");
        assert_eq!(ours.signer_at(Duration::from_secs(60), now).url("k"), first);
        let day = ours.day_key.read().unwrap().clone().expect("cached").0;
        assert_eq!(day, now.format("%Y%m%d").to_string());
        let tomorrow = now + chrono::Duration::days(1);
        assert_ne!(
            ours.signer_at(Duration::from_secs(60), tomorrow).url("k"),
            first
        );
        assert_eq!(
            ours.day_key.read().unwrap().clone().expect("cached").0,
            tomorrow.format("%Y%m%d").to_string()
        );
    }
}
