//! The command line: `serve`, `admin` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{DEFAULT_LISTEN, ServerConfig};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(name = "muster-server", version, about = "The Muster server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agents' API, the admin API and the dashboard.
    Serve(ServeArgs),
    /// Operator actions on the database.
    Admin(AdminArgs),
    /// Try Muster on this machine: a server on SQLite and an agent reporting this machine.
    Demo(DemoArgs),
    /// The agent built into this binary (`muster-server agent run ...`), which `demo` starts
    /// as its child process; the same as `muster-agent`.
    #[command(hide = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:3000].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on this address instead of on `--listen`.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Largest request body in bytes, as sent and after gzip decompression [default: 16 MiB].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// The configuration file (TOML; see docs/SERVER.md). Flags override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The database: `sqlite://PATH` (created if missing), a file path, or
    /// `postgres://USER@HOST:PORT/DB` (the database must exist)
    /// [default: sqlite://muster-data/muster.db].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The configuration: the defaults, the file if one was named, then the flag.
    fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::load(path)?,
            None => ServerConfig::default(),
        };
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        Ok(config)
    }
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

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the demo keeps its database, the agent's configuration and state.
    #[arg(long, default_value = "muster-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Run this agent binary instead of the agent built into `muster-server`.
    #[arg(long, value_name = "PATH")]
    pub agent_binary: Option<PathBuf>,
}

/// Runs a parsed command line. `shutdown` ends `serve` and `demo`.
pub async fn execute(
    cli: Cli,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.database.resolve()?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if let Some(metrics_listen) = args.metrics_listen {
                config.metrics_listen = Some(metrics_listen);
            }
            if let Some(bytes) = args.max_body_bytes {
                config.limits.max_body_bytes = bytes;
            }
            let listener = TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let metrics_listener = match config.metrics_listen {
                Some(address) => Some(
                    TcpListener::bind(address)
                        .await
                        .with_context(|| format!("listening on {address} for /metrics"))?,
                ),
                None => None,
            };
            crate::run_with_metrics(config, listener, metrics_listener, shutdown).await?;
            Ok(())
        }
        Command::Admin(args) => admin(args).await,
        Command::Demo(args) => crate::demo::run(args, shutdown).await,
        Command::Agent { .. } => {
            anyhow::bail!("`agent` runs before the server starts; this is a bug")
        }
    }
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let config = args.database.resolve()?;
    let url = &config.database_url;
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
