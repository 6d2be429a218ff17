//! An fflow replica's configuration, from the environment only.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use reelay_shared::config::{ConfigError, S3Config, parse_or, var_or};

/// `REELAY_FFLOW_ADDR` (default `127.0.0.1:4050`): where it listens;
/// `REELAY_FFLOW_REPLICA` (default `r1`): its name, and the path prefix of
/// its own address; `REELAY_FFLOW_PUBLIC_URL` (default `http://<addr>`): the
/// base others reach it at, so its address is `<public url>/<replica>/`;
/// `REELAY_FFLOW_DATA_DIR` (default `/tmp/reelay-fflow/<replica>`): where
/// sessions are glued; `REELAY_FFLOW_DISK_BUDGET_BYTES` (default 10 GiB):
/// the most its sessions may hold (a session reserves twice its size: the
/// source and the renditions); `REELAY_FFLOW_MAX_ENCODES` (default 2):
/// ffmpeg runs at once, the rest queue; `REELAY_FFLOW_SESSION_TTL_SECS`
/// (default 90000): a session idle this long is dropped with its files;
/// `REELAY_FFLOW_PRESET` (default `veryfast`): the x264 preset; the S3
/// settings say where renditions go.
#[derive(Clone, Debug)]
pub struct FflowConfig {
    pub addr: SocketAddr,
    pub replica: String,
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub disk_budget: u64,
    pub max_encodes: usize,
    pub session_ttl: Duration,
    pub preset: String,
    pub s3: S3Config,
}

impl FflowConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let replica = var_or("REELAY_FFLOW_REPLICA", "r1");
        let path_safe = !replica.is_empty()
            && replica
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !path_safe {
            return Err(ConfigError::Invalid {
                name: "REELAY_FFLOW_REPLICA",
                reason: "must be letters, digits, - or _ (it is a path segment)".into(),
            });
        }
        let public_url = Some(var_or("REELAY_FFLOW_PUBLIC_URL", "")).filter(|u| !u.is_empty());
        Ok(Self {
            addr: parse_or(
                "REELAY_FFLOW_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 4050)),
            )?,
            data_dir: PathBuf::from(var_or(
                "REELAY_FFLOW_DATA_DIR",
                &format!("/tmp/reelay-fflow/{replica}"),
            )),
            replica,
            public_url,
            disk_budget: parse_or("REELAY_FFLOW_DISK_BUDGET_BYTES", 10u64 << 30)?,
            max_encodes: parse_or("REELAY_FFLOW_MAX_ENCODES", 2usize)?.max(1),
            session_ttl: Duration::from_secs(parse_or("REELAY_FFLOW_SESSION_TTL_SECS", 90_000)?),
            preset: var_or("REELAY_FFLOW_PRESET", "veryfast"),
            s3: S3Config::from_env()?,
        })
    }
}
