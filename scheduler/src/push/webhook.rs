//! A generic push webhook: the notification as JSON, POSTed to one
//! configured URL and signed with HMAC-SHA256 (`x-reelay-signature:
//! sha256=<hex>`), with the idempotency key also in `Idempotency-Key`. The
//! device token only names the device to the receiver; it never picks the
//! URL. 410 forgets the device.

use futures_util::{FutureExt, future::BoxFuture};
use reelay_shared::signing;
use serde_json::json;

use super::{Delivery, Provider, Push, Reply};

pub struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl Webhook {
    pub fn new(http: reqwest::Client, url: String, secret: String) -> Self {
        Self { http, url, secret }
    }

    async fn deliver(&self, push: &Push) -> Delivery {
        let body = serde_json::to_vec(&json!({
            "idempotency_key": push.idempotency_key,
            "device_token": push.token,
            "video_id": push.video_id,
            "state": push.state,
            "message_key": push.message_key,
        }))
        .expect("JSON of plain values");
        let request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                signing::SIGNATURE_HEADER,
                signing::sign(&self.secret, &body),
            )
            .header("idempotency-key", push.idempotency_key.to_string())
            .body(body);
        match Reply::of(request).await {
            Ok(reply) => {
                let gone = reply.status == reqwest::StatusCode::GONE;
                reply.delivery(gone)
            }
            Err(delivery) => delivery,
        }
    }
}

impl Provider for Webhook {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Delivery> {
        self.deliver(push).boxed()
    }
}
