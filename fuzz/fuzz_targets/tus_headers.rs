//! Every tus header parser on the same bytes: none may panic, and each
//! refusal must be a 4xx. `cargo +nightly fuzz run tus_headers`.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use reelay_api::video::tus;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    for name in [
        "upload-metadata",
        "upload-checksum",
        "upload-offset",
        "upload-length",
        "tus-resumable",
        "content-type",
    ] {
        let mut headers = HeaderMap::new();
        headers.append(name, value.clone());
        // Twice as well: a header sent more than once is its own case.
        let mut twice = headers.clone();
        twice.append(name, value.clone());
        for headers in [headers, twice] {
            let errors = [
                tus::metadata(&headers).err(),
                tus::checksum(&headers).err(),
                tus::number(&headers, "Upload-Offset").err(),
                tus::require_resumable(&headers).err(),
                tus::require_offset_content_type(&headers).err(),
            ];
            for error in errors.into_iter().flatten() {
                assert!(error.status().is_client_error(), "{error}");
            }
        }
    }
});
