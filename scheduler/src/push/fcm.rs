//! Firebase Cloud Messaging, HTTP v1: an OAuth2 access token obtained with a
//! service-account key (a JWT bearer grant, RS256), then
//! `POST {base}/v1/projects/{project}/messages:send`. An `UNREGISTERED`
//! answer (404) means the app was uninstalled: the device is forgotten.

use std::{path::Path, time::Duration};

use futures_util::{FutureExt, future::BoxFuture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};

use super::{Delivery, Provider, Push, Reply, retry_after, unix_now, unreachable};

/// The scope FCM's send endpoint asks for.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// The fields of a Google service-account key file that we use.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub private_key_id: Option<String>,
    pub private_key: String,
    pub client_email: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccount {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the FCM service-account key {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a Google service-account key (JSON with project_id, private_key, client_email)",
                path.display()
            )
        })
    }
}

pub struct Fcm {
    http: reqwest::Client,
    base_url: String,
    account: ServiceAccount,
    key: EncodingKey,
    token: Mutex<Option<(String, Instant)>>,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

impl Fcm {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        account: ServiceAccount,
    ) -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            anyhow::anyhow!("the FCM service-account private_key is not an RSA PEM key: {e}")
        })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            account,
            key,
            token: Mutex::new(None),
        })
    }

    /// A cached access token, or a new one when it is within a minute of
    /// expiring.
    async fn access_token(&self) -> Result<String, Delivery> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && *until > Instant::now() + Duration::from_secs(60)
        {
            return Ok(token.clone());
        }
        let now = unix_now();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let assertion = jsonwebtoken::encode(
            &header,
            &Assertion {
                iss: &self.account.client_email,
                scope: SCOPE,
                aud: &self.account.token_uri,
                iat: now,
                exp: now + 3600,
            },
            &self.key,
        )
        .map_err(|e| Delivery::Rejected(format!("signing the OAuth2 assertion: {e}")))?;
        let response = self
            .http
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!("grant_type={GRANT_TYPE}&assertion={assertion}"))
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let after = retry_after(&response);
            let detail = response.text().await.unwrap_or_default();
            // A refused grant is our configuration's fault, but it may be
            // fixed without a restart (a key re-enabled): keep retrying.
            return Err(Delivery::Retry {
                reason: format!("OAuth2 token endpoint answered {status}: {detail}"),
                after,
            });
        }
        let answer: TokenAnswer = response.json().await.map_err(|e| Delivery::Retry {
            reason: format!("OAuth2 token answer unreadable: {e}"),
            after: None,
        })?;
        let until = Instant::now() + Duration::from_secs(answer.expires_in);
        *cached = Some((answer.access_token.clone(), until));
        Ok(answer.access_token)
    }

    async fn deliver(&self, push: &Push) -> Delivery {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(delivery) => return delivery,
        };
        // FCM wants every data value as a string.
        let message = json!({
            "message": {
                "token": push.token,
                "data": {
                    "idempotency_key": push.idempotency_key.to_string(),
                    "video_id": push.video_id.to_string(),
                    "state": push.state,
                    "message_key": push.message_key,
                },
                "android": {
                    "collapse_key": push.video_id.to_string(),
                    "notification": { "body_loc_key": push.message_key },
                },
            }
        });
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.base_url, self.account.project_id
        );
        let request = self.http.post(url).bearer_auth(&token).json(&message);
        let reply = match Reply::of(request).await {
            Ok(reply) => reply,
            Err(delivery) => return delivery,
        };
        if reply.status == reqwest::StatusCode::UNAUTHORIZED {
            // The access token was revoked or expired early: get a new one.
            *self.token.lock().await = None;
            return Delivery::Retry {
                reason: format!("{}: {}", reply.status, reply.body),
                after: None,
            };
        }
        let unregistered = reply.status == reqwest::StatusCode::NOT_FOUND
            || (reply.status == reqwest::StatusCode::BAD_REQUEST
                && reply.body.contains("UNREGISTERED"));
        reply.delivery(unregistered)
    }
}

impl Provider for Fcm {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Delivery> {
        self.deliver(push).boxed()
    }
}
