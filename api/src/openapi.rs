//! The OpenAPI 3.1 document of the HTTP surface, served at `/openapi.json`.
//!
//! It is generated from the handlers: each carries a `#[utoipa::path]`
//! annotation, and every route group registers its handlers with
//! `utoipa_axum::routes!`, which builds the axum route *and* the document's
//! operation from that one annotation, so the two cannot drift apart. The
//! only routes outside the document are the console's files
//! ([`UNDOCUMENTED`]); `tests/integration/contract.rs` holds the router and
//! the document to that, and schemathesis checks the answers against it.
//!
//! Errors are RFC 9457 problem details ([`Problem`]); the unit types below
//! ([`NotFound`], [`Conflict`], …) list them in an operation's `responses`.
//! [`finish`] adds what every operation has in common: the bearer token's
//! security requirement and its 401, unless the operation says otherwise.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{
    OpenApi, ToSchema,
    openapi::{
        ContentBuilder, HttpMethod, Ref, RefOr, Required,
        path::{Operation, ParameterBuilder, ParameterIn},
        response::{Response, ResponseBuilder},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

/// Routes the router has that the document leaves out: the web console's
/// files (HTML, scripts), which are not part of the API.
pub const UNDOCUMENTED: &[&str] = &["/", "/console", "/console/", "/console/{*file}"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "reelay",
        description = "Resumable video uploads (tus 1.0.0), their processing and playback; \
            firmware rollouts for a fleet; reactions, comments and player statistics. \
            Every request but the public ones carries `Authorization: Bearer <JWT>` \
            (`sub` = the user id, `role` = `user`, `service` or `admin`). \
            Errors are `application/problem+json`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    tags(
        (name = "uploads", description = "tus 1.0.0: core, creation, creation-with-upload, termination, checksum, expiration"),
        (name = "videos", description = "The caller's videos: status for polling, details, links, history"),
        (name = "profile", description = "The one current profile video per user, and links to them for services"),
        (name = "moderation", description = "Verification of uploaded videos"),
        (name = "onboarding", description = "The ordered collection shown to new users"),
        (name = "playback", description = "HLS and DASH for players"),
        (name = "devices", description = "Devices that receive push notifications"),
        (name = "engagement", description = "Reactions, bookmarks, comments, watch history, player events"),
        (name = "statistics", description = "Views, watch time and retention from the analytics store"),
        (name = "fleet", description = "Firmware, devices and staged rollouts for the scooter fleet"),
        (name = "ops", description = "Health, readiness, metrics and this document"),
    ),
)]
struct ApiDoc;

/// The document's frame (info, tags, shared schemas); the operations come
/// from the routes.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// RFC 9457 problem details: the body of every error.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What was wrong, for a person to read (a 500 says no more than
    /// "internal error").
    pub detail: String,
}

/// The raw bytes of a file: a tus body. Any bytes are a body, so the
/// schema names no JSON type (OpenAPI 3.1's way to say "binary").
pub struct FileBytes;

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .content_media_type("application/octet-stream")
            .description(Some("The raw bytes of a file"))
            .into()
    }
}

impl ToSchema for FileBytes {}

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// Unit types naming an error response, for `responses(...)`.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $description:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_string(), problem($description))])
            }
        }
    )*};
}

problems! {
    BadRequest = 400, "A parameter, header or body is malformed; the detail says which";
    Forbidden = 403, "The token's role may not do this";
    NotFound = 404, "No such resource, or not the caller's";
    Missing = 404, "Something the body names does not exist (or is not the caller's); the detail says what";
    Conflict = 409, "The resource is not in a state that allows this";
    Gone = 410, "The upload failed or was deleted";
    TooLarge = 413, "The body is larger than allowed";
    Locked = 423, "Another request is changing this right now; retry";
    Unavailable = 503, "A service it depends on is unavailable; retry later";
}

/// 429: past the caller's rate on a public endpoint.
pub struct TooManyRequests;

impl utoipa::IntoResponses for TooManyRequests {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut response = ResponseBuilder::new()
            .description("Past the caller's rate; `Retry-After` says when to come back")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        response.headers.insert(
            "Retry-After".into(),
            utoipa::openapi::HeaderBuilder::new()
                .schema(Some(u64::schema()))
                .description(Some("Seconds until a request will be taken again"))
                .build()
                .into(),
        );
        BTreeMap::from([("429".to_owned(), response.into())])
    }
}

use utoipa::PartialSchema as _;

const BEARER: &str = "bearer";

/// What every operation has in common, added once the routes are merged:
/// the bearer scheme; operations that say nothing of security need a token
/// (and answer 401 without a good one); operations marked `security(())`
/// need none, and those marked optional (`security((), ("bearer" = []))`)
/// answer 401 to a bad token. A `Tus-Resumable` header is documented on
/// every tus operation.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
            HttpMethod::Head,
            HttpMethod::Options,
        ] {
            let Some(operation) = operation_mut(item, &method) else {
                continue;
            };
            secure(operation);
            if path.starts_with("/files") && method != HttpMethod::Options {
                tus_resumable(operation);
            }
            if path.starts_with("/files") && method == HttpMethod::Post {
                // creation-with-upload: the first bytes may come along.
                if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                    body.required = Some(Required::False);
                }
            }
            cursor_pattern(operation);
            never_null(operation);
            malformed_parameters(operation);
            operation.operation_id = Some(operation_id(&method, path));
        }
    }
}

/// A unique, stable id per operation (OpenAPI requires them unique; the
/// handlers' names are not): `get_v1_videos_id_comments`.
fn operation_id(method: &HttpMethod, path: &str) -> String {
    let method = serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let words = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty());
    let slash = path.len() > 1 && path.ends_with('/');
    std::iter::once(method.as_str())
        .chain(words)
        .chain(slash.then_some("slash"))
        .collect::<Vec<_>>()
        .join("_")
}

/// Any operation with a path or query parameter may answer 400: one that
/// does not parse, is not UTF-8, or holds NUL (`%00`).
fn malformed_parameters(operation: &mut Operation) {
    let takes = operation.parameters.iter().flatten().any(|p| {
        matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
    });
    if takes && !operation.responses.responses.contains_key("400") {
        operation.responses.responses.insert(
            "400".into(),
            problem("A parameter is malformed (not UTF-8, or holding NUL); the detail says which"),
        );
    }
}

/// A parameter (in the path, query or a header) is text or absent, never
/// JSON's null: `Option<T>` says absent, so `null` leaves its schema.
fn never_null(operation: &mut Operation) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut()
            && let SchemaType::Array(types) = &schema.schema_type
        {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            schema.schema_type = match types.as_slice() {
                [one] => SchemaType::Type(one.clone()),
                _ => SchemaType::Array(types),
            };
        }
    }
}

/// Every `cursor` query parameter takes what `crate::cursor` writes, unless
/// it says otherwise.
fn cursor_pattern(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if parameter.name != "cursor" || parameter.parameter_in != ParameterIn::Query {
            continue;
        }
        if let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(schema))) =
            parameter.schema.as_mut()
        {
            schema
                .pattern
                .get_or_insert_with(|| crate::cursor::PATTERN.to_owned());
        }
    }
}

fn operation_mut<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &HttpMethod,
) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Options => item.options.as_mut(),
        _ => None,
    }
}

fn secure(operation: &mut Operation) {
    let requirements = operation
        .security
        .get_or_insert_with(|| vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    let token_checked = requirements
        .iter()
        .any(|r| serde_json::to_value(r).is_ok_and(|v| v.get(BEARER).is_some()));
    if token_checked {
        operation.responses.responses.insert(
            "401".into(),
            problem("No token, or one that does not verify or has expired"),
        );
    }
}

/// What `Upload-Checksum` holds: an algorithm and the base64 of a digest
/// of its length (20 bytes for sha1, 32 for sha256).
const CHECKSUM_PATTERN: &str =
    r"^(sha1 [A-Za-z0-9+/]{26}[AEIMQUYcgkosw048]=|sha256 [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$";

/// Every tus operation takes `Tus-Resumable: 1.0.0` (412 otherwise), and
/// the headers of tus are described once, here: `Upload-Checksum` with its
/// pattern and the custom format `tus-checksum` (for generators: a pattern
/// this exact is more than some can fill), `Upload-Metadata` with the
/// custom format `tus-metadata` (what no pattern can say: unique keys,
/// values that are base64 of UTF-8).
fn tus_resumable(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for parameter in parameters.iter_mut() {
        if let RefOr::T(parameter) = parameter
            && parameter.name == "Upload-Checksum"
            && let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(schema))) =
                parameter.schema.as_mut()
        {
            schema.pattern = Some(CHECKSUM_PATTERN.to_owned());
            schema.format = Some(utoipa::openapi::SchemaFormat::Custom(
                "tus-checksum".to_owned(),
            ));
        }
        if let RefOr::T(parameter) = parameter
            && parameter.name == "Upload-Metadata"
            && let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(schema))) =
                parameter.schema.as_mut()
        {
            schema.format = Some(utoipa::openapi::SchemaFormat::Custom(
                "tus-metadata".to_owned(),
            ));
            schema.max_length = Some(8 * 1024);
        }
    }
    if parameters
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case("tus-resumable")))
    {
        return;
    }
    parameters.push(
        ParameterBuilder::new()
            .name("Tus-Resumable")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some("The protocol version: 1.0.0"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .enum_values(Some(["1.0.0"])),
            ))
            .build()
            .into(),
    );
    operation.responses.responses.insert(
        "412".into(),
        problem("`Tus-Resumable` is missing or not 1.0.0"),
    );
}

/// The whole document: the routes' operations in [`base`], [`finish`]ed.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes::router().into_openapi();
    finish(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn every_operation_has_an_id_of_its_own() {
        let doc = super::document();
        let mut seen = HashSet::new();
        for item in doc.paths.paths.values() {
            for operation in [
                &item.get,
                &item.post,
                &item.put,
                &item.patch,
                &item.delete,
                &item.head,
                &item.options,
            ]
            .into_iter()
            .flatten()
            {
                let id = operation.operation_id.clone().expect("an operationId");
                assert!(seen.insert(id.clone()), "{id} twice");
            }
        }
        assert!(seen.len() > 60, "{} operations", seen.len());
    }
}
