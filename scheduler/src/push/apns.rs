//! Apple Push Notification service, token-based: an ES256 JWT (`kid` = key
//! id, `iss` = team id) renewed every 40 minutes (Apple refuses tokens older
//! than an hour and ones renewed more often than every 20 minutes), sent
//! over HTTP/2 to `POST {base}/3/device/{token}` with `apns-topic` and
//! `apns-push-type`. 410 (`Unregistered`) and `BadDeviceToken` forget the
//! device.

use std::time::Duration;

use futures_util::{FutureExt, future::BoxFuture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};

use super::{Delivery, Provider, Push, Reply, unix_now};

/// How long one provider token is used.
const TOKEN_LIFE: Duration = Duration::from_secs(40 * 60);
/// How long APNs keeps a notification for a device that is offline.
const KEEP_FOR_SECS: u64 = 24 * 3600;

pub struct ApnsKey {
    /// The `.p8` key from Apple's developer account (PEM, EC P-256).
    pub pem: String,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
}

pub struct Apns {
    http: reqwest::Client,
    base_url: String,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    topic: String,
    jwt: Mutex<Option<(String, Instant)>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Deserialize)]
struct Refusal {
    reason: String,
}

impl Apns {
    /// `http` must speak HTTP/2 (APNs speaks nothing else); see
    /// [`crate::push_client`].
    pub fn new(http: reqwest::Client, base_url: &str, key: ApnsKey) -> anyhow::Result<Self> {
        let encoding = EncodingKey::from_ec_pem(key.pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the APNs key is not an EC P-256 PEM (.p8) key: {e}"))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key: encoding,
            key_id: key.key_id,
            team_id: key.team_id,
            topic: key.topic,
            jwt: Mutex::new(None),
        })
    }

    async fn provider_token(&self) -> Result<String, Delivery> {
        let mut cached = self.jwt.lock().await;
        if let Some((jwt, made)) = cached.as_ref()
            && made.elapsed() < TOKEN_LIFE
        {
            return Ok(jwt.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let jwt = jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.team_id,
                iat: unix_now(),
            },
            &self.key,
        )
        .map_err(|e| Delivery::Rejected(format!("signing the APNs token: {e}")))?;
        *cached = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }

    async fn deliver(&self, push: &Push) -> Delivery {
        let jwt = match self.provider_token().await {
            Ok(jwt) => jwt,
            Err(delivery) => return delivery,
        };
        let body = json!({
            "aps": { "alert": { "loc-key": push.message_key }, "sound": "default" },
            "video_id": push.video_id,
            "state": push.state,
            "idempotency_key": push.idempotency_key,
        });
        let request = self
            .http
            .post(format!("{}/3/device/{}", self.base_url, push.token))
            .header(reqwest::header::AUTHORIZATION, format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-id", push.idempotency_key.to_string())
            .header("apns-collapse-id", push.video_id.to_string())
            .header("apns-expiration", (unix_now() + KEEP_FOR_SECS).to_string())
            .json(&body);
        let mut reply = match Reply::of(request).await {
            Ok(reply) => reply,
            Err(delivery) => return delivery,
        };
        // APNs says why in `{"reason": …}`; keep just that.
        reply.body = serde_json::from_str::<Refusal>(&reply.body)
            .map(|r| r.reason)
            .unwrap_or_default();
        if reply.status == reqwest::StatusCode::FORBIDDEN && reply.body == "ExpiredProviderToken" {
            *self.jwt.lock().await = None;
            return Delivery::Retry {
                reason: reply.body,
                after: None,
            };
        }
        let gone = reply.status == reqwest::StatusCode::GONE
            || matches!(
                reply.body.as_str(),
                "BadDeviceToken" | "Unregistered" | "DeviceTokenNotForTopic"
            );
        reply.delivery(gone)
    }
}

impl Provider for Apns {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Delivery> {
        self.deliver(push).boxed()
    }
}
