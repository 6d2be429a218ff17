//! Local stand-ins for the push services we can't reach from tests: FCM
//! HTTP v1 (with its OAuth2 token endpoint), APNs (HTTP/2 only) and a
//! webhook consumer. Each checks what the real one checks (paths, headers,
//! signatures and auth, JSON shape), answers as scripted per device token,
//! and records every attempt. A request that breaks a rule is refused and
//! recorded as a violation, so a test asserts there were none.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::post,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// FCM's OAuth2 scope.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One push that reached a receiver (whatever it was answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub platform: &'static str,
    pub token: String,
    pub idempotency_key: String,
    pub video_id: String,
    pub state: String,
    pub message_key: String,
    /// What the receiver answered.
    pub answered: u16,
}

/// How the receiver answers the next push for a token.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Ok,
    /// 500, worth a retry.
    ServerError,
    /// The provider's "this token is invalid" answer.
    Unregistered,
    /// Hold the request this long, then answer 200.
    Hold(Duration),
}

/// The key material the receivers verify with, and where they are.
pub struct PushKeys {
    pub fcm_project: String,
    pub fcm_client_email: String,
    pub fcm_private_pem: String,
    fcm_public_pem: String,
    pub apns_key_id: String,
    pub apns_team_id: String,
    pub apns_topic: String,
    pub apns_private_pem: String,
    apns_public_pem: String,
    pub webhook_secret: String,
}

#[derive(Default)]
struct Log {
    /// Every attempt, as it arrived (an attempt whose sender died while
    /// the receiver held it is here, never answered).
    arrived: Vec<Received>,
    /// Every attempt that was answered, with the answer.
    received: Vec<Received>,
    violations: Vec<String>,
    script: HashMap<String, VecDeque<Answer>>,
    access_tokens: Vec<String>,
}

struct Shared {
    keys: PushKeys,
    token_uri: Mutex<String>,
    log: Mutex<Log>,
}

/// The receivers, on one local port (HTTP/1.1 and HTTP/2 without TLS).
pub struct PushReceivers {
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for PushReceivers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PushReceivers {
    pub async fn start() -> Self {
        let keys = PushKeys::generate();
        let shared = Arc::new(Shared {
            keys,
            token_uri: Mutex::new(String::new()),
            log: Mutex::new(Log::default()),
        });
        let router = Router::new()
            .route("/oauth2/token", post(fcm_token))
            .route("/fcm/v1/projects/{project}/messages:send", post(fcm_send))
            .route("/apns/3/device/{token}", post(apns_send))
            .route("/webhook", post(webhook_send))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receivers");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        *shared.token_uri.lock().unwrap() = format!("{base_url}/oauth2/token");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base_url,
            shared,
            task,
        }
    }

    pub fn keys(&self) -> &PushKeys {
        &self.shared.keys
    }

    pub fn fcm_base_url(&self) -> String {
        format!("{}/fcm", self.base_url)
    }

    pub fn apns_base_url(&self) -> String {
        format!("{}/apns", self.base_url)
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/webhook", self.base_url)
    }

    /// A Google service-account key file for the FCM sender.
    pub fn write_fcm_credentials(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let keys = &self.shared.keys;
        let path = dir.join("fcm-service-account.json");
        let account = json!({
            "type": "service_account",
            "project_id": keys.fcm_project,
            "private_key_id": "test-key-1",
            "private_key": keys.fcm_private_pem,
            "client_email": keys.fcm_client_email,
            "token_uri": self.shared.token_uri.lock().unwrap().clone(),
        });
        std::fs::write(&path, account.to_string()).expect("write the key file");
        path
    }

    /// The APNs `.p8` key file.
    pub fn write_apns_key(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("apns-key.p8");
        std::fs::write(&path, &self.shared.keys.apns_private_pem).expect("write the key");
        path
    }

    /// Answers for the next pushes to `token`, in order; then 200.
    pub fn script(&self, token: &str, answers: &[Answer]) {
        self.shared
            .log
            .lock()
            .unwrap()
            .script
            .insert(token.to_owned(), answers.iter().copied().collect());
    }

    /// Answered attempts, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().received.clone()
    }

    /// Every attempt that reached the receiver, answered or not.
    pub fn arrivals(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().arrived.clone()
    }

    /// Attempts for `token` that reached the receiver.
    pub fn arrived(&self, token: &str) -> usize {
        self.arrivals().iter().filter(|r| r.token == token).count()
    }

    pub fn violations(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().violations.clone()
    }
}

impl Shared {
    fn violation(&self, what: String) -> Response {
        self.log.lock().unwrap().violations.push(what.clone());
        (StatusCode::BAD_REQUEST, what).into_response()
    }

    fn next_answer(&self, token: &str) -> Answer {
        self.log
            .lock()
            .unwrap()
            .script
            .get_mut(token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Ok)
    }

    /// Records the push and answers it as scripted; `gone` is how this
    /// provider says the token is invalid.
    async fn answer(&self, mut received: Received, gone: (StatusCode, Value)) -> Response {
        self.log.lock().unwrap().arrived.push(received.clone());
        let answer = self.next_answer(&received.token);
        if let Answer::Hold(d) = answer {
            tokio::time::sleep(d).await;
        }
        let (status, body) = match answer {
            Answer::Ok | Answer::Hold(_) => (StatusCode::OK, json!({})),
            Answer::ServerError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"reason": "InternalServerError"}),
            ),
            Answer::Unregistered => gone,
        };
        received.answered = status.as_u16();
        self.log.lock().unwrap().received.push(received);
        (status, axum::Json(body)).into_response()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_uuid(s: &str) -> bool {
    Uuid::parse_str(s).is_ok()
}

/// The OAuth2 JWT-bearer grant, as Google's token endpoint checks it.
async fn fcm_token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return shared.violation(format!("token: bad grant_type in {body}"));
    }
    let Some(assertion) = form.get("assertion") else {
        return shared.violation("token: no assertion".into());
    };
    let key = DecodingKey::from_rsa_pem(shared.keys.fcm_public_pem.as_bytes()).expect("key");
    let mut validation = Validation::new(Algorithm::RS256);
    let token_uri = shared.token_uri.lock().unwrap().clone();
    validation.set_audience(&[token_uri]);
    validation.set_issuer(&[&shared.keys.fcm_client_email]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return shared.violation(format!("token: assertion does not verify: {e}")),
    };
    if claims["scope"] != FCM_SCOPE {
        return shared.violation(format!("token: scope {}", claims["scope"]));
    }
    let access = format!("ya29.{}", Uuid::new_v4().simple());
    shared
        .log
        .lock()
        .unwrap()
        .access_tokens
        .push(access.clone());
    axum::Json(json!({ "access_token": access, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `projects/{id}/messages:send`, as FCM HTTP v1 checks it.
async fn fcm_send(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if project != shared.keys.fcm_project {
        return shared.violation(format!("fcm: project {project}"));
    }
    let bearer = header(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !shared.log.lock().unwrap().access_tokens.contains(&bearer) {
        return (StatusCode::UNAUTHORIZED, "not an access token we issued").into_response();
    }
    if !header(&headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return shared.violation("fcm: content-type".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return shared.violation("fcm: body is not JSON".into());
    };
    let message = &body["message"];
    let Some(token) = message["token"].as_str() else {
        return shared.violation(format!("fcm: no message.token in {body}"));
    };
    let Some(data) = message["data"].as_object() else {
        return shared.violation(format!("fcm: no message.data in {body}"));
    };
    if !data.values().all(Value::is_string) {
        return shared.violation(format!("fcm: data values must be strings: {body}"));
    }
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let received = Received {
        platform: "fcm",
        token: token.to_owned(),
        idempotency_key: field("idempotency_key"),
        video_id: field("video_id"),
        state: field("state"),
        message_key: field("message_key"),
        answered: 0,
    };
    if !is_uuid(&received.idempotency_key) || !is_uuid(&received.video_id) {
        return shared.violation(format!("fcm: ids in {body}"));
    }
    let gone = json!({"error": {"code": 404, "message": "Requested entity was not found.",
        "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "UNREGISTERED"}]}});
    shared.answer(received, (StatusCode::NOT_FOUND, gone)).await
}

/// `/3/device/{token}`, as APNs checks it: HTTP/2, a provider token signed
/// ES256 by the team's key, the topic and push type.
async fn apns_send(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let keys = &shared.keys;
    if version != Version::HTTP_2 {
        return shared.violation(format!("apns: {version:?}, APNs speaks HTTP/2 only"));
    }
    let Some(jwt) = header(&headers, "authorization").and_then(|v| v.strip_prefix("bearer "))
    else {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"reason": "MissingProviderToken"})),
        )
            .into_response();
    };
    let jwt_header = jsonwebtoken::decode_header(jwt).ok();
    if jwt_header.as_ref().and_then(|h| h.kid.as_deref()) != Some(keys.apns_key_id.as_str())
        || jwt_header.as_ref().map(|h| h.alg) != Some(Algorithm::ES256)
    {
        return shared.violation("apns: provider token header (alg ES256, kid)".into());
    }
    let key = DecodingKey::from_ec_pem(keys.apns_public_pem.as_bytes()).expect("key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&keys.apns_team_id]);
    validation.set_required_spec_claims(&["iss", "iat"]);
    validation.validate_exp = false;
    let claims = match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return shared.violation(format!("apns: provider token: {e}")),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["iat"]
        .as_u64()
        .is_none_or(|iat| iat + 3600 < now || iat > now + 60)
    {
        return shared.violation("apns: provider token older than an hour".into());
    }
    if header(&headers, "apns-topic") != Some(keys.apns_topic.as_str()) {
        return shared.violation("apns: apns-topic".into());
    }
    if header(&headers, "apns-push-type") != Some("alert") {
        return shared.violation("apns: apns-push-type".into());
    }
    let apns_id = header(&headers, "apns-id").unwrap_or_default().to_owned();
    if !is_uuid(&apns_id) {
        return shared.violation("apns: apns-id is not a UUID".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return shared.violation("apns: body is not JSON".into());
    };
    let Some(loc_key) = body["aps"]["alert"]["loc-key"].as_str() else {
        return shared.violation(format!("apns: no aps.alert.loc-key in {body}"));
    };
    let received = Received {
        platform: "apns",
        token,
        idempotency_key: apns_id,
        video_id: body["video_id"].as_str().unwrap_or_default().to_owned(),
        state: body["state"].as_str().unwrap_or_default().to_owned(),
        message_key: loc_key.to_owned(),
        answered: 0,
    };
    shared
        .answer(
            received,
            (
                StatusCode::GONE,
                json!({"reason": "Unregistered", "timestamp": now * 1000}),
            ),
        )
        .await
}

/// A webhook consumer: checks the HMAC-SHA256 signature of the exact body.
async fn webhook_send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = header(&headers, reelay_shared::signing::SIGNATURE_HEADER).unwrap_or_default();
    if !reelay_shared::signing::verify(&shared.keys.webhook_secret, &body, signature) {
        return shared.violation("webhook: signature does not verify".into());
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return shared.violation("webhook: body is not JSON".into());
    };
    let field = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    let received = Received {
        platform: "webhook",
        token: field("device_token"),
        idempotency_key: field("idempotency_key"),
        video_id: field("video_id"),
        state: field("state"),
        message_key: field("message_key"),
        answered: 0,
    };
    if header(&headers, "idempotency-key") != Some(received.idempotency_key.as_str()) {
        return shared.violation("webhook: Idempotency-Key header differs from the body's".into());
    }
    shared.answer(received, (StatusCode::GONE, json!({}))).await
}

impl PushKeys {
    fn generate() -> Self {
        let (fcm_private_pem, fcm_public_pem) =
            openssl_key_pair(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
        let (apns_private_pem, apns_public_pem) =
            openssl_key_pair(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        Self {
            fcm_project: "reelay-test".into(),
            fcm_client_email: "push@reelay-test.iam.gserviceaccount.com".into(),
            fcm_private_pem,
            fcm_public_pem,
            apns_key_id: "ABC123DEFG".into(),
            apns_team_id: "DEF123GHIJ".into(),
            apns_topic: "app.reelay.test".into(),
            apns_private_pem,
            apns_public_pem,
            webhook_secret: format!("push-{}", Uuid::new_v4().simple()),
        }
    }
}

/// A fresh key pair (PKCS#8 private PEM, SPKI public PEM) from the openssl CLI.
pub fn openssl_key_pair(genpkey_args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs")
            .status
            .success()
    };
    let mut gen_args = vec!["genpkey"];
    gen_args.extend_from_slice(genpkey_args);
    gen_args.extend_from_slice(&["-out", private.to_str().expect("utf-8")]);
    assert!(run(&gen_args), "openssl made a key");
    assert!(
        run(&[
            "pkey",
            "-in",
            private.to_str().expect("utf-8"),
            "-pubout",
            "-out",
            public.to_str().expect("utf-8"),
        ]),
        "openssl wrote the public key"
    );
    (
        std::fs::read_to_string(private).expect("private key"),
        std::fs::read_to_string(public).expect("public key"),
    )
}
