//! The command line: `serve`, `admin` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{DEFAULT_LISTEN, ServerConfig};
use crate::store::{Store, TokenFilter};
use crate::token::TokenKind;

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
    /// Check the configuration file (systemd's `ExecStartPre`): exit 0 and print the effective
    /// settings, or exit 78 with the key and the reason.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The agent built into this binary (`muster-server agent run ...`), which `demo` starts
    /// as its child process; the same as `muster-agent`.
    #[command(hide = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Read and validate the file as `serve` would; nothing is opened or bound.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The configuration file [default: /etc/muster/server.toml].
    #[arg(long, value_name = "PATH", default_value = "/etc/muster/server.toml")]
    pub config: PathBuf,
    /// Print nothing when the file is valid.
    #[arg(long)]
    pub quiet: bool,
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
    /// A tenant's tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// A token kind an operator may create.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NewTokenKind {
    /// The admin API and the dashboard.
    Admin,
    /// Registers agents into the tenant.
    Enrol,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an admin or enrolment token; prints it, once.
    Create {
        /// The tenant's id or name.
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        kind: NewTokenKind,
        /// What the token is for.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: seconds, or a number with `s`, `m`, `h`, `d` or `w` (`30d`). Default:
        /// no expiry.
        #[arg(long, value_parser = parse_expires_in)]
        expires_in: Option<i64>,
        /// Enrolment tokens: how many agents may register with it (1: single-use). Default:
        /// any number. An agent registering again with the same token is not a new use.
        #[arg(long, value_name = "N")]
        max_uses: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's tokens (never the tokens themselves).
    List {
        /// The tenant's id or name.
        #[arg(long)]
        tenant: String,
        /// Agent tokens too (one per registration).
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token of the tenant by its id.
    Revoke {
        id: String,
        /// The tenant's id or name.
        #[arg(long)]
        tenant: String,
    },
}

fn parse_expires_in(text: &str) -> Result<i64, String> {
    crate::admin::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration like 3600, 90m, 12h, 30d or 2w"))
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
    /// Print the public key (ed25519, base64) that verifies the tenant's commands, for the
    /// agents' `[security] command_signing_key`. Made on first need.
    SigningKey {
        /// The tenant's id or name.
        tenant: String,
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
            crate::systemd::ignore_sighup();
            crate::serve(
                config,
                listener,
                metrics_listener,
                crate::systemd::stopping(shutdown),
                crate::systemd::ready,
            )
            .await?;
            Ok(())
        }
        Command::Admin(args) => admin(args).await,
        Command::Demo(args) => crate::demo::run(args, shutdown).await,
        Command::Config(ConfigCommand::Check(args)) => {
            let config = ServerConfig::load(&args.config)?;
            if !args.quiet {
                println!("{}: valid", args.config.display());
                println!("listen = {}", config.listen);
                if let Some(metrics) = config.metrics_listen {
                    println!("metrics_listen = {metrics}");
                }
                println!("database = {}", redact_url(&config.database_url));
                println!("{}", crate::ops::describe_limit(&config.limits));
            }
            Ok(())
        }
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
        AdminCommand::Tenant(TenantCommand::SigningKey { tenant }) => {
            match crate::admin::find_tenant(&store, &tenant)
                .await
                .context("looking the tenant up")?
            {
                Some(found) => {
                    let key = crate::commands::tenant_key(&store, &found.id)
                        .await
                        .context("reading the tenant's signing key")?;
                    println!("{}", key.public_key);
                    Ok(())
                }
                None => Err(anyhow::anyhow!("no tenant has the id or name `{tenant}`")),
            }
        }
        AdminCommand::Token(command) => token_command(&store, command).await,
    };
    store.close().await;
    result
}

/// Unix seconds as RFC 3339, for output.
fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn token_json(token: &crate::store::TokenInfo) -> serde_json::Value {
    json!({
        "id": token.id,
        "kind": token.kind.as_str(),
        "name": token.name,
        "agent_id": token.agent_id,
        "created_at": rfc3339(token.created_at),
        "expires_at": token.expires_at.map(rfc3339),
        "revoked_at": token.revoked_at.map(rfc3339),
        "last_used_at": token.last_used_at.map(rfc3339),
        "max_uses": token.max_uses,
        "uses": token.uses,
    })
}

async fn token_command(store: &Store, command: TokenCommand) -> anyhow::Result<()> {
    let tenant_of = |tenant: &str| {
        let tenant = tenant.to_owned();
        async move {
            crate::admin::find_tenant(store, &tenant)
                .await
                .context("looking the tenant up")?
                .ok_or_else(|| anyhow::anyhow!("no tenant has the id or name `{tenant}`"))
        }
    };
    let now = jiff::Timestamp::now().as_second();
    match command {
        TokenCommand::Create {
            tenant,
            kind,
            name,
            expires_in,
            max_uses,
            json,
        } => {
            let tenant = tenant_of(&tenant).await?;
            let kind = match kind {
                NewTokenKind::Admin => TokenKind::Admin,
                NewTokenKind::Enrol => TokenKind::Enrol,
            };
            let (info, token) = crate::admin::create_token(
                store,
                &tenant.id,
                kind,
                name.as_deref(),
                crate::admin::TokenLimits {
                    expires_at: expires_in.map(|s| now + s),
                    max_uses,
                },
                now,
            )
            .await
            .context("creating the token")?;
            if json {
                let mut out = token_json(&info);
                out["tenant_id"] = json!(tenant.id);
                out["token"] = json!(token.expose());
                println!("{out:#}");
            } else {
                println!("token id:  {}", info.id);
                println!("kind:      {}", info.kind.as_str());
                println!(
                    "expires:   {}",
                    info.expires_at.map_or("never".to_owned(), rfc3339)
                );
                if let Some(max) = info.max_uses {
                    println!("uses:      0 of {max}");
                }
                println!("token:     {}", token.expose());
                println!();
                println!("The token is shown this once; the server keeps only its hash.");
            }
            Ok(())
        }
        TokenCommand::List { tenant, all, json } => {
            let tenant = tenant_of(&tenant).await?;
            let mut tokens = Vec::new();
            // Every page: an operator's listing is not bounded by the API's page size.
            loop {
                let filter = TokenFilter {
                    limit: 1000,
                    offset: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
                    ..TokenFilter::default()
                };
                let page = store
                    .list_tokens(&tenant.id, &filter)
                    .await
                    .context("listing tokens")?;
                let done = page.tokens.len() < 1000;
                tokens.extend(page.tokens);
                if done {
                    break;
                }
            }
            tokens.retain(|t| all || t.kind != TokenKind::Agent);
            if json {
                let out: Vec<_> = tokens.iter().map(token_json).collect();
                println!("{:#}", serde_json::Value::Array(out));
            } else {
                for t in &tokens {
                    let state = match (t.revoked_at, t.expires_at) {
                        (Some(at), _) => format!("revoked {}", rfc3339(at)),
                        (None, Some(at)) if at <= now => format!("expired {}", rfc3339(at)),
                        (None, Some(at)) => format!("expires {}", rfc3339(at)),
                        (None, None) => "live".to_owned(),
                    };
                    let uses = match (t.kind, t.max_uses) {
                        (TokenKind::Enrol, Some(max)) if t.uses >= max => {
                            format!("used up ({} of {max})", t.uses)
                        }
                        (TokenKind::Enrol, Some(max)) => format!("uses {} of {max}", t.uses),
                        (TokenKind::Enrol, None) => format!("uses {}", t.uses),
                        _ => "-".to_owned(),
                    };
                    println!(
                        "{}  {:<5}  {}  {}  {}  {}",
                        t.id,
                        t.kind.as_str(),
                        rfc3339(t.created_at),
                        state,
                        uses,
                        t.name.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id, tenant } => {
            let tenant = tenant_of(&tenant).await?;
            let info = store
                .revoke_token(&tenant.id, &id, now)
                .await
                .context("revoking the token")?
                .ok_or_else(|| anyhow::anyhow!("tenant `{}` has no token `{id}`", tenant.name))?;
            println!(
                "revoked {} token {} at {}",
                info.kind.as_str(),
                info.id,
                info.revoked_at.map(rfc3339).unwrap_or_default()
            );
            if info.kind == crate::token::TokenKind::Agent {
                // Running servers trust an agent token they found live for a while.
                eprintln!(
                    "running servers refuse it within their [limits] token_cache_s \
                     (default 120 s); the admin API's revocation takes effect at once"
                );
            }
            Ok(())
        }
    }
}

/// A database url fit for messages: a file path as is, anything with credentials cut.
fn display_url(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("[redacted]@{host}"),
        None => PathBuf::from(url).display().to_string(),
    }
}

/// A database URL without its password, if it has one (`postgres://user:secret@host/db`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_database_password_is_never_printed() {
        assert_eq!(
            redact_url("postgres://muster:s3cret@db:5432/muster"),
            "postgres://muster:***@db:5432/muster"
        );
        assert_eq!(
            redact_url("postgres://muster@db/muster"),
            "postgres://muster@db/muster"
        );
        assert_eq!(redact_url("sqlite://data/m.db"), "sqlite://data/m.db");
    }
}
