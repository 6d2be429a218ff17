//! Parsing and writing tus 1.0.0 headers.

use axum::http::{HeaderMap, HeaderValue};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// 412 unless the request speaks tus 1.0.0.
pub fn require_resumable(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable") {
        Some(v) if v == VERSION => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

/// A header that may be sent once: two of them (which one would count?)
/// are a 400.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(ApiError::BadRequest(format!(
            "{name} is sent more than once"
        ))),
        None => Ok(first),
    }
}

/// Reads a non-negative integer header; `None` when absent.
pub fn number(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    let Some(value) = single(headers, name)? else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a non-negative integer")))
}

/// 415 unless the body is `application/offset+octet-stream`.
pub fn require_offset_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        Some(OFFSET_CONTENT_TYPE) => Ok(()),
        _ => Err(ApiError::ContentType),
    }
}

/// The fields of Upload-Metadata that reelay keeps, and the raw header to
/// echo on HEAD.
#[derive(Debug, Default, PartialEq)]
pub struct Metadata {
    pub raw: Option<String>,
    pub filename: Option<String>,
    pub filetype: Option<String>,
    pub title: Option<String>,
    /// The `onboarding` key is present: admin onboarding content.
    pub onboarding: bool,
    /// `firmware <base64 of a firmware id>`: the upload is that fleet
    /// firmware's file (admins only).
    pub firmware: Option<String>,
}

/// The longest Upload-Metadata header: it is stored and echoed on HEAD.
const MAX_METADATA: usize = 8 * 1024;
/// The longest value of one key, decoded.
const MAX_METADATA_VALUE: usize = 1024;

/// Parses `key base64,key2 base64,flag`: keys unique and non-empty, values
/// base64 of at most 1024 bytes (every key: the header is kept whole), the
/// header at most 8 KiB; filename, filetype and title must be UTF-8.
pub fn metadata(headers: &HeaderMap) -> Result<Metadata, ApiError> {
    let Some(value) = single(headers, "upload-metadata")? else {
        return Ok(Metadata::default());
    };
    let bad = |why: String| ApiError::BadRequest(format!("Upload-Metadata: {why}"));
    if value.len() > MAX_METADATA {
        return Err(bad(format!(
            "{} bytes; at most {MAX_METADATA}",
            value.len()
        )));
    }
    let raw = value.to_str().map_err(|_| bad("must be ASCII".into()))?;
    let mut out = Metadata {
        raw: Some(raw.to_owned()).filter(|r| !r.trim().is_empty()),
        ..Metadata::default()
    };
    let mut seen = std::collections::HashSet::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.splitn(2, ' ');
        let key = parts.next().unwrap_or_default();
        if key.is_empty() || !seen.insert(key) {
            return Err(bad(format!("key '{key}' is empty or repeated")));
        }
        let value = match parts.next().map(str::trim) {
            Some(v) if !v.is_empty() => STANDARD
                .decode(v)
                .map_err(|_| bad(format!("the value of '{key}' is not base64")))?,
            _ => Vec::new(),
        };
        if value.len() > MAX_METADATA_VALUE {
            return Err(bad(format!(
                "'{key}' is longer than {MAX_METADATA_VALUE} bytes"
            )));
        }
        let slot = match key {
            "onboarding" => {
                out.onboarding = true;
                continue;
            }
            "filename" => &mut out.filename,
            "filetype" => &mut out.filetype,
            "title" | "name" => &mut out.title,
            "firmware" => &mut out.firmware,
            _ => continue,
        };
        let text = String::from_utf8(value).map_err(|_| bad(format!("'{key}' is not UTF-8")))?;
        if text.contains('\0') {
            return Err(bad(format!("'{key}' must not contain NUL characters")));
        }
        *slot = Some(text);
    }
    Ok(out)
}

/// A checksum the client sent with a PATCH.
#[derive(Debug, Clone, PartialEq)]
pub enum Checksum {
    Sha1(Vec<u8>),
    Sha256(Vec<u8>),
}

/// Parses `Upload-Checksum: <algorithm> <base64>`; 400 for an algorithm we
/// don't support or a malformed value.
pub fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
    let Some(value) = single(headers, "upload-checksum")? else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Upload-Checksum must be ASCII".into()))?;
    let (algorithm, digest) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::BadRequest("Upload-Checksum must be '<algorithm> <base64 digest>'".into())
    })?;
    let digest = STANDARD
        .decode(digest.trim())
        .map_err(|_| ApiError::BadRequest("the Upload-Checksum digest is not base64".into()))?;
    match algorithm {
        "sha1" if digest.len() == 20 => Ok(Some(Checksum::Sha1(digest))),
        "sha256" if digest.len() == 32 => Ok(Some(Checksum::Sha256(digest))),
        "sha1" | "sha256" => Err(ApiError::BadRequest(format!(
            "the Upload-Checksum digest has the wrong length for {algorithm}"
        ))),
        other => Err(ApiError::BadRequest(format!(
            "unsupported checksum algorithm '{other}'; supported: {CHECKSUM_ALGORITHMS}"
        ))),
    }
}

/// Hashes a body as it streams, for the algorithm the client chose.
pub enum ChecksumHasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ChecksumHasher {
    pub fn new(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Sha1(_) => Self::Sha1(Sha1::new()),
            Checksum::Sha256(_) => Self::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    pub fn matches(self, checksum: &Checksum) -> bool {
        match (self, checksum) {
            (Self::Sha1(h), Checksum::Sha1(expected)) => {
                h.finalize().as_slice() == expected.as_slice()
            }
            (Self::Sha256(h), Checksum::Sha256(expected)) => {
                h.finalize().as_slice() == expected.as_slice()
            }
            _ => false,
        }
    }
}

/// `Upload-Expires` in the RFC 9110 date format.
pub fn http_date(at: DateTime<Utc>) -> HeaderValue {
    HeaderValue::from_str(&at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .expect("a formatted date is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn metadata_keeps_known_keys_and_rejects_bad_base64() {
        let m = metadata(&headers(&[(
            "upload-metadata",
            "filename bXkubXA0,is_confidential,title aMOp",
        )]))
        .unwrap();
        assert_eq!(m.filename.as_deref(), Some("my.mp4"));
        assert_eq!(m.title.as_deref(), Some("hé"));
        assert!(!m.onboarding);
        assert!(
            metadata(&headers(&[("upload-metadata", "onboarding,filename YQ==")]))
                .unwrap()
                .onboarding
        );
        assert!(metadata(&headers(&[("upload-metadata", "filename !!!")])).is_err());
        assert!(metadata(&headers(&[("upload-metadata", "a YQ==,a YQ==")])).is_err());
    }

    #[test]
    fn checksum_names_its_algorithm() {
        let sha1 = STANDARD.encode([0u8; 20]);
        assert!(matches!(
            checksum(&headers(&[("upload-checksum", &format!("sha1 {sha1}"))])),
            Ok(Some(Checksum::Sha1(_)))
        ));
        assert!(checksum(&headers(&[("upload-checksum", &format!("md5 {sha1}"))])).is_err());
        assert!(checksum(&headers(&[("upload-checksum", "sha256 AAAA")])).is_err());
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(
            number(&headers(&[("upload-offset", "42")]), "upload-offset").unwrap(),
            Some(42)
        );
        assert!(number(&headers(&[("upload-offset", "-1")]), "upload-offset").is_err());
        assert!(number(&headers(&[("upload-offset", "+1")]), "upload-offset").is_err());
        assert_eq!(number(&HeaderMap::new(), "upload-offset").unwrap(), None);
        let mut twice = headers(&[("upload-length", "10")]);
        twice.append("upload-length", HeaderValue::from_static("20"));
        let Err(ApiError::BadRequest(said)) = number(&twice, "upload-length") else {
            panic!("two Upload-Length headers passed");
        };
        assert!(said.contains("more than once"), "{said}");
    }

    #[test]
    fn every_metadata_value_and_the_whole_header_are_bounded() {
        let long = STANDARD.encode(vec![b'x'; 1025]);
        let Err(ApiError::BadRequest(said)) = metadata(&headers(&[(
            "upload-metadata",
            &format!("anything {long}"),
        )])) else {
            panic!("an unknown key of 1025 bytes passed");
        };
        assert!(said.contains("'anything'"), "{said}");
        let many: Vec<String> = (0..12)
            .map(|i| format!("k{i} {}", STANDARD.encode(vec![b'x'; 700])))
            .collect();
        assert!(metadata(&headers(&[("upload-metadata", &many.join(","))])).is_err());
        assert!(
            metadata(&headers(&[(
                "upload-metadata",
                &format!("k {}", STANDARD.encode(vec![b'x'; 1024]))
            )]))
            .is_ok()
        );
    }
}
