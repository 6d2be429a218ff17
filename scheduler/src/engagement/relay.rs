//! The UGC outbox relay: reactions, bookmarks, comments and settings
//! events, written to `ugc_outbox` in their own transactions, go to the UGC
//! stream in log order with publisher confirms, and leave the outbox once
//! confirmed. A crash between the two sends a row again; the analytics
//! table keeps one row per log `seq`.

use std::sync::Arc;

use lapin::{BasicProperties, types::ShortString};
use reelay_shared::{engagement::outbox, lease::Lease, mq::Publisher, store::Store};

/// Rows relayed per round.
const BATCH: i64 = 500;

pub struct Relay {
    pub store: Store,
    pub publisher: Arc<Publisher>,
}

impl Relay {
    /// Relays every waiting row, batch after batch, while leading; how many
    /// went out.
    pub async fn round(&self, lease: &Lease) -> anyhow::Result<usize> {
        let stream = self.publisher.topology().ugc_stream();
        let mut relayed = 0;
        while lease.is_leader() {
            let waiting = outbox::waiting(self.store.pool(), BATCH).await?;
            if waiting.is_empty() {
                break;
            }
            let mut messages = Vec::with_capacity(waiting.len());
            for message in &waiting {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"));
                messages.push((stream.clone(), properties, serde_json::to_vec(message)?));
            }
            self.publisher.publish_all_confirmed(messages).await?;
            let seqs: Vec<i64> = waiting.iter().map(|m| m.seq).collect();
            outbox::sent(self.store.pool(), &seqs).await?;
            relayed += waiting.len();
            metrics::counter!("reelay_ugc_relayed_total").increment(waiting.len() as u64);
            if (waiting.len() as i64) < BATCH {
                break;
            }
        }
        Ok(relayed)
    }
}
