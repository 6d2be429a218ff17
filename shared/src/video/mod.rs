//! The video product: ids, states and events of videos and profiles, their
//! aggregates and projections, the queries the api and jobs read, object
//! keys in S3, jobs on the broker, and what workers say to fflow replicas.

pub mod aggregate;
pub mod domain;
pub mod events;
pub mod fflow;
pub mod jobs;
pub mod objects;
pub mod profile;
pub mod projector;
pub mod queries;
pub mod routing;

pub use aggregate::{UploadSession, Video, VideoAggregate, VideoRejection, VideoState};
pub use domain::{UserId, Verification, VideoId, VideoStatus};
pub use events::{ProfileEvent, VideoEvent};
pub use profile::{Profile, ProfileAggregate, ProfileId};
