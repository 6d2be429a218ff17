//! An fflow replica's configuration, from the environment only.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use reelay_shared::config::{ConfigError, Env, S3Config, Vars, optional, secs};

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
#[derive(Clone, Debug, PartialEq)]
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
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let replica = env.var_or("REELAY_FFLOW_REPLICA", "r1");
        let path_safe = replica
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !path_safe {
            return Err(ConfigError::Invalid {
                name: "REELAY_FFLOW_REPLICA",
                reason: "must be letters, digits, - or _ (it is a path segment)".into(),
            });
        }
        Ok(Self {
            addr: env.parse_or(
                "REELAY_FFLOW_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 4050)),
            )?,
            data_dir: PathBuf::from(env.var_or(
                "REELAY_FFLOW_DATA_DIR",
                &format!("/tmp/reelay-fflow/{replica}"),
            )),
            public_url: env.get("REELAY_FFLOW_PUBLIC_URL"),
            replica,
            disk_budget: env.parse_or("REELAY_FFLOW_DISK_BUDGET_BYTES", 10u64 << 30)?,
            max_encodes: env.parse_or("REELAY_FFLOW_MAX_ENCODES", 2usize)?.max(1),
            session_ttl: env.secs_or("REELAY_FFLOW_SESSION_TTL_SECS", 90_000)?,
            preset: env.var_or("REELAY_FFLOW_PRESET", "veryfast"),
            s3: S3Config::read(env)?,
        })
    }

    pub fn to_env(&self) -> Vars {
        let mut vars = vec![
            ("REELAY_FFLOW_ADDR", self.addr.to_string()),
            ("REELAY_FFLOW_REPLICA", self.replica.clone()),
            ("REELAY_FFLOW_PUBLIC_URL", optional(&self.public_url)),
            ("REELAY_FFLOW_DATA_DIR", self.data_dir.display().to_string()),
            (
                "REELAY_FFLOW_DISK_BUDGET_BYTES",
                self.disk_budget.to_string(),
            ),
            ("REELAY_FFLOW_MAX_ENCODES", self.max_encodes.to_string()),
            ("REELAY_FFLOW_SESSION_TTL_SECS", secs(self.session_ttl)),
            ("REELAY_FFLOW_PRESET", self.preset.clone()),
        ];
        vars.extend(self.s3.to_env());
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fflow_config_reads_back_what_it_writes() {
        let env = Env::of([
            ("REELAY_FFLOW_REPLICA", "r-2"),
            ("REELAY_FFLOW_ADDR", "127.0.0.1:0"),
            ("REELAY_FFLOW_PRESET", "ultrafast"),
        ]);
        let config = FflowConfig::read(&env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/reelay-fflow/r-2"));
        assert_eq!(
            FflowConfig::read(&Env::of(config.to_env())).unwrap(),
            config
        );
        let bad = FflowConfig::read(&Env::of([("REELAY_FFLOW_REPLICA", "a/b")]));
        assert!(bad.is_err());
    }
}
