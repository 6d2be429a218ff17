//! The fleet product's jobs, all on the unordered fleet queue: `seal` makes
//! an uploaded firmware available (signed), `update` asks the fleet backend
//! to update a device, `cancel` tells it to drop one.

pub mod seal;
pub mod update;

use reelay_shared::fleet::jobs::FleetJob;

use crate::{consumer::Outcome, jobs::Context};

/// Runs one fleet job; `attempt` is how many tries came before.
pub async fn run(ctx: &Context, job: FleetJob, attempt: u32) -> anyhow::Result<Outcome> {
    match job {
        FleetJob::Seal(firmware) => seal::run(ctx, firmware).await,
        FleetJob::Update(update) => update::request(ctx, update, attempt).await,
        FleetJob::Cancel(update) => update::cancel(ctx, update, attempt).await,
    }
}

/// The span a fleet job runs in.
pub fn span_of(job: &FleetJob) -> tracing::Span {
    match job {
        FleetJob::Seal(id) => tracing::info_span!("job", job.kind = "seal", firmware.id = %id),
        FleetJob::Update(id) | FleetJob::Cancel(id) => {
            tracing::info_span!("job", job.kind = job.name(), update.id = %id)
        }
    }
}
