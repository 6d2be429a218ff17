use clap::{Parser, Subcommand};
use reelay_api::{Application, auth, config::ApiConfig};
use reelay_shared::{shutdown::shutdown_signal, telemetry};

#[derive(Parser)]
#[command(name = "reelay-api", about = "The reelay tus and REST api")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the OpenAPI document (what `/openapi.json` serves).
    Openapi,
    /// Print a bearer token for a user, signed with REELAY_JWT_SECRET.
    Token {
        #[arg(long)]
        user: uuid::Uuid,
        /// user, service or admin.
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        println!(
            "{}",
            serde_json::to_string_pretty(&reelay_api::openapi::document())?
        );
        return Ok(());
    }
    if let Some(Command::Token {
        user,
        role,
        ttl_secs,
    }) = cli.command
    {
        let secret = reelay_shared::config::Env::process().required("REELAY_JWT_SECRET")?;
        let role: auth::Role = serde_json::from_value(serde_json::Value::String(role))
            .map_err(|_| anyhow::anyhow!("--role must be user, service or admin"))?;
        println!("{}", auth::issue_with_role(&secret, user, role, ttl_secs)?);
        return Ok(());
    }
    telemetry::init_tracing();
    let config = ApiConfig::from_env()?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
