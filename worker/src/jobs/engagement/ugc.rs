//! The UGC stream (reactions, bookmarks, comments, settings, as the event
//! log recorded them) into ClickHouse's `ugc_events`, keyed by the log's
//! sequence number.

use anyhow::Context as _;
use reelay_shared::{
    clickhouse::ClickHouse,
    engagement::{analytics::UgcRow, outbox::UgcMessage},
};

use super::etl::{Loader, Message, month_runs};
use crate::jobs::Context;

pub struct Ugc;

impl Loader for Ugc {
    const NAME: &'static str = "ugc";
    const TABLE: &'static str = "ugc_events";

    fn events_in(&self, _: &Message) -> usize {
        1
    }

    async fn flush(&self, _: &Context, ch: &ClickHouse, batch: &[Message]) -> anyhow::Result<()> {
        let rows: Vec<UgcRow> = batch
            .iter()
            .filter_map(|m| match serde_json::from_slice::<UgcMessage>(&m.body) {
                Ok(u) => Some(UgcRow {
                    seq: u.seq as u64,
                    kind: u.kind,
                    aggregate_id: u.aggregate_id,
                    video_id: u.video_id,
                    user_id: match u.user_id.is_nil() {
                        true => String::new(),
                        false => u.user_id.to_string(),
                    },
                    recorded_ms: u.recorded_at.timestamp_millis().max(0) as u64,
                    event_date: u.recorded_at.format("%Y-%m-%d").to_string(),
                    payload: u.event.to_string(),
                    stream_offset: m.offset,
                }),
                Err(e) => {
                    tracing::error!(offset = m.offset, error = %e, "a UGC message does not parse; skipped");
                    metrics::counter!("reelay_etl_unreadable_total", "stream" => "ugc").increment(1);
                    None
                }
            })
            .collect();
        for run in month_runs(&rows, |r| &r.event_date) {
            ch.insert("ugc_events", run)
                .await
                .context("inserting UGC events")?;
        }
        Ok(())
    }
}
