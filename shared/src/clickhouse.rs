//! ClickHouse, the analytics store, over its HTTP interface with
//! `JSONEachRow` (through the reqwest already in the tree; the `clickhouse`
//! crate's RowBinary protocol needs a far newer server than Debian's 18.16).
//! The SQL stays within what 18.16 and current releases both run: plain
//! types, the MergeTree family, monthly partitions.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::config::{ConfigError, Env, Vars};

/// `REELAY_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`) and
/// `REELAY_CLICKHOUSE_DATABASE` (default `reelay`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClickHouseConfig {
    pub url: String,
    pub database: String,
}

impl ClickHouseConfig {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let database = env.var_or("REELAY_CLICKHOUSE_DATABASE", "reelay");
        if !database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::Invalid {
                name: "REELAY_CLICKHOUSE_DATABASE",
                reason: "letters, digits and _ only".into(),
            });
        }
        Ok(Self {
            url: env
                .var_or("REELAY_CLICKHOUSE_URL", "http://127.0.0.1:8123")
                .trim_end_matches('/')
                .to_owned(),
            database,
        })
    }

    pub fn to_env(&self) -> Vars {
        vec![
            ("REELAY_CLICKHOUSE_URL", self.url.clone()),
            ("REELAY_CLICKHOUSE_DATABASE", self.database.clone()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error("ClickHouse is unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("ClickHouse refused ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("ClickHouse's answer does not parse: {0}")]
    Decode(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct ClickHouse {
    http: reqwest::Client,
    url: String,
    database: String,
}

impl ClickHouse {
    pub fn new(config: &ClickHouseConfig) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            url: config.url.clone(),
            database: config.database.clone(),
        }
    }

    /// The database every table of this deployment lives in.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Sends `query` in the URL and `body` as its data (an INSERT's rows),
    /// or, without a body, the query as the body: long `IN (...)` lists
    /// stay out of the URL.
    async fn post(&self, query: &str, body: Vec<u8>) -> Result<String, ClickHouseError> {
        let settings = [("output_format_json_quote_64bit_integers", "0")];
        let (url, body) = match body.is_empty() {
            true => (
                reqwest::Url::parse_with_params(&self.url, &settings),
                query.as_bytes().to_vec(),
            ),
            false => (
                reqwest::Url::parse_with_params(
                    &self.url,
                    settings.iter().copied().chain([("query", query)]),
                ),
                body,
            ),
        };
        let url = url.map_err(|e| ClickHouseError::Refused {
            status: 0,
            body: format!("bad URL {}: {e}", self.url),
        })?;
        let response = self.http.post(url).body(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(ClickHouseError::Refused {
                status: status.as_u16(),
                body: text.chars().take(500).collect(),
            });
        }
        Ok(text)
    }

    /// Runs a statement (DDL, ALTER).
    pub async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.post(sql, Vec::new()).await.map(drop)
    }

    /// Inserts `rows` into `table` (of this database) as one block: all or
    /// nothing.
    pub async fn insert<T: Serialize>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), ClickHouseError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(rows.len() * 256);
        for row in rows {
            serde_json::to_writer(&mut body, row)?;
            body.push(b'\n');
        }
        let query = format!("INSERT INTO {}.{table} FORMAT JSONEachRow", self.database);
        self.post(&query, body).await.map(drop)
    }

    /// The rows of a `SELECT` (without a FORMAT clause).
    pub async fn query<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, ClickHouseError> {
        let text = self
            .post(&format!("{sql} FORMAT JSONEachRow"), Vec::new())
            .await?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(ClickHouseError::from))
            .collect()
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> bool {
        matches!(
            self.http.get(format!("{}/ping", self.url)).send().await,
            Ok(r) if r.status().is_success()
        )
    }
}
