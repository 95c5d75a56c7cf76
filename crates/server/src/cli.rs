//! The command line: `serve` and `admin`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, Limits, ServerConfig};
use crate::store::{DEFAULT_DATABASE_URL, Store};

#[derive(Debug, Parser)]
#[command(name = "muster-server", version, about = "The Muster server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agents' API.
    Serve(ServeArgs),
    /// Operator actions on the database.
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Largest request body in bytes, as sent and after gzip decompression.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// The database: `sqlite://PATH` (created if missing), a file path, or
    /// `postgres://USER@HOST:PORT/DB` (the database must exist).
    #[arg(long, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Tenants: create, list.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id, enrolment token and admin token, once.
    Create {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the tenants.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command line. `shutdown` ends `serve`.
pub async fn execute(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = ServerConfig {
                listen: args.listen,
                database_url: args.database.database_url,
                limits: Limits {
                    max_body_bytes: args.max_body_bytes,
                },
            };
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            crate::run(config, listener, shutdown).await?;
            Ok(())
        }
        Command::Admin(args) => admin(args).await,
    }
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let store = Store::open(url)
        .await
        .with_context(|| format!("opening the database {}", display_url(url)))?;
    let result = match args.command {
        AdminCommand::Tenant(TenantCommand::Create { name, json }) => {
            let created = crate::admin::create_tenant(&store, &name)
                .await
                .with_context(|| format!("creating tenant `{name}`"))?;
            if json {
                let out = json!({
                    "tenant_id": created.tenant.id,
                    "name": created.tenant.name,
                    "enrolment_token": created.enrol_token.expose(),
                    "admin_token": created.admin_token.expose(),
                });
                println!("{out:#}");
            } else {
                println!("tenant id:        {}", created.tenant.id);
                println!("name:             {}", created.tenant.name);
                println!("enrolment token:  {}", created.enrol_token.expose());
                println!("admin token:      {}", created.admin_token.expose());
                println!();
                println!("The tokens are shown this once; the server keeps only their hashes.");
            }
            Ok(())
        }
        AdminCommand::Tenant(TenantCommand::List { json }) => {
            let tenants = store.list_tenants().await.context("listing tenants")?;
            if json {
                let out: Vec<_> = tenants
                    .iter()
                    .map(|t| {
                        let created = jiff::Timestamp::from_second(t.created_at)
                            .map(|t| t.to_string())
                            .unwrap_or_default();
                        json!({"tenant_id": t.id, "name": t.name, "created_at": created})
                    })
                    .collect();
                println!("{:#}", serde_json::Value::Array(out));
            } else {
                for t in &tenants {
                    println!("{}  {}", t.id, t.name);
                }
            }
            Ok(())
        }
    };
    store.close().await;
    result
}

/// A database url fit for messages: a file path as is, anything with credentials cut.
fn display_url(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("[redacted]@{host}"),
        None => PathBuf::from(url).display().to_string(),
    }
}
