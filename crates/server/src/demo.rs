//! `muster-server demo`: the quickstart. A server on SQLite under the data directory, a
//! `demo` tenant, and this machine's agent as a child process reporting to it.
//!
//! The demo keeps the tenant's enrolment and admin tokens in `demo-tokens.json` (mode 0600)
//! in its data directory, so a second run prints the same admin token and the browser's
//! session survives; the server itself still stores only their hashes. Deleting the data
//! directory starts afresh.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::cli::DemoArgs;
use crate::config::ServerConfig;
use crate::store::Store;
use crate::token::{Token, TokenKind};

/// The tenant the demo creates.
pub const DEMO_TENANT: &str = "demo";

/// How often the demo agent heartbeats and sends telemetry: often, so the dashboard moves.
const DEMO_INTERVAL_S: u64 = 10;

/// How long the agent gets to stop after SIGTERM before it is killed.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The demo tenant's tokens in the clear, kept in the data directory between runs.
#[derive(Debug, Serialize, Deserialize)]
struct DemoTokens {
    tenant_id: String,
    enrolment_token: String,
    admin_token: String,
}

/// Runs the demo until `shutdown` completes or the agent exits.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = absolute(&args.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let database_url = format!("sqlite://{}", data_dir.join("muster.db").display());
    let store = Store::open(&database_url)
        .await
        .with_context(|| format!("opening {database_url}"))?;
    let tokens = demo_tokens(&store, &data_dir).await?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    let config = ServerConfig {
        listen: address,
        database_url,
        ..ServerConfig::default()
    };
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run(config, listener, async {
        let _ = server_stopped.await;
    }));

    let signing_key = crate::commands::tenant_key(&store, &tokens.tenant_id)
        .await
        .context("reading the demo tenant's command signing key")?;
    let agent_config = write_agent_config(&data_dir, address, &tokens, &signing_key.public_key)?;
    let mut agent = start_agent(args.agent_binary.as_deref(), &agent_config)?;
    let dashboard = format!("http://{address}/");
    println!();
    println!("Muster demo");
    println!("  dashboard:    {dashboard}");
    println!("  admin token:  {}", tokens.admin_token);
    println!("                (log in to the dashboard with it; the admin API takes it as");
    println!("                `Authorization: Bearer ...` at http://{address}/api/admin/)");
    println!(
        "  agent:        pid {}, reporting this machine every {DEMO_INTERVAL_S} s",
        agent.id().unwrap_or_default()
    );
    println!("  commands:     this machine's agent runs `exec`, `script` and `builtin` commands");
    println!("                (you are on this machine; a real agent allows only `builtin` unless");
    println!("                its [security] allowed_command_types says otherwise)");
    println!("  data:         {}", data_dir.display());
    println!("Ctrl-C stops both.");
    println!();

    let watch = tokio::spawn(watch_first_report(
        store.clone(),
        tokens.tenant_id.clone(),
        dashboard,
    ));
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        status = agent.wait() => Err(anyhow::anyhow!("the agent exited: {}", status?)),
    };
    watch.abort();
    stop_agent(&mut agent).await;
    let _ = stop_server.send(());
    server.await.context("the server task")??;
    store.close().await;
    outcome
}

/// The path made absolute, since the agent resolves paths from its own config file.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// The demo tenant's tokens: those saved by an earlier run if they still work, else a new
/// tenant (first run) or new tokens for it.
async fn demo_tokens(store: &Store, data_dir: &Path) -> anyhow::Result<DemoTokens> {
    let path = data_dir.join("demo-tokens.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<DemoTokens>(&text)
        && token_works(store, &saved, &saved.enrolment_token, TokenKind::Enrol).await
        && token_works(store, &saved, &saved.admin_token, TokenKind::Admin).await
    {
        return Ok(saved);
    }
    let tokens = match crate::admin::find_tenant(store, DEMO_TENANT).await? {
        Some(tenant) => {
            let now = jiff::Timestamp::now().as_second();
            let token = |kind| {
                crate::admin::create_token(store, &tenant.id, kind, None, Default::default(), now)
            };
            let (_, enrol) = token(TokenKind::Enrol).await?;
            let (_, admin) = token(TokenKind::Admin).await?;
            DemoTokens {
                tenant_id: tenant.id.clone(),
                enrolment_token: enrol.expose().to_owned(),
                admin_token: admin.expose().to_owned(),
            }
        }
        None => {
            let created = crate::admin::create_tenant(store, DEMO_TENANT).await?;
            DemoTokens {
                tenant_id: created.tenant.id,
                enrolment_token: created.enrol_token.expose().to_owned(),
                admin_token: created.admin_token.expose().to_owned(),
            }
        }
    };
    let text = serde_json::to_string_pretty(&tokens)?;
    write_private(&path, text.as_bytes())?;
    Ok(tokens)
}

/// Whether `text` is a live token of `kind` of the saved demo tenant.
async fn token_works(store: &Store, saved: &DemoTokens, text: &str, kind: TokenKind) -> bool {
    let Some(token) = Token::parse(text) else {
        return false;
    };
    match store.find_token(&token.hash()).await {
        Ok(Some(record)) => {
            record.tenant_id == saved.tenant_id
                && record.is_live(kind, jiff::Timestamp::now().as_second())
        }
        _ => false,
    }
}

/// Writes a file readable by its owner only (it holds tokens), atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    muster_agent::atomic::write(path, bytes, Some(0o600))
        .with_context(|| format!("writing {}", path.display()))
}

/// The agent's configuration for the demo: this server, the demo tenant, short intervals and
/// no splay, its state beside the database; `exec` and `script` commands allowed (the operator
/// is on this machine) and the tenant's signing key pinned.
fn write_agent_config(
    data_dir: &Path,
    address: SocketAddr,
    tokens: &DemoTokens,
    signing_key: &str,
) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("agent");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = format!(
        "# Written by `muster-server demo` at each start.\n\
         [agent]\n\
         heartbeat_interval = {DEMO_INTERVAL_S}\n\
         collection_interval = {DEMO_INTERVAL_S}\n\
         inventory_interval = 3600\n\
         splay = 0\n\
         state_dir = \"state\"\n\
         pid_file = \"agent.pid\"\n\
         log_level = \"warn\"\n\
         \n\
         [api]\n\
         base_url = \"http://{address}/api\"\n\
         tenant_id = {tenant}\n\
         auth_token = {token}\n\
         \n\
         [security]\n\
         allowed_command_types = [\"builtin\", \"exec\", \"script\"]\n\
         command_signing_key = {key}\n",
        tenant = toml_string(&tokens.tenant_id),
        token = toml_string(&tokens.enrolment_token),
        key = toml_string(signing_key),
    );
    let path = dir.join("agent.toml");
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// A TOML basic string. Ids and tokens are plain ASCII, but quote properly anyway.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Variables the agent reads from its environment; the demo's agent takes its configuration
/// from its file alone.
fn agent_env_var(name: &str) -> bool {
    name.starts_with("MUSTER_")
        || matches!(
            name,
            "TENANT_ID"
                | "API_TOKEN"
                | "API_BASE_URL"
                | "HARDWARE_SOFTWARE_INTERVAL"
                | "TELEMETRY_INTERVAL"
        )
}

/// Starts `muster-agent run` as a child: `binary` if given, else the agent built into this
/// executable.
fn start_agent(binary: Option<&Path>, config: &Path) -> anyhow::Result<Child> {
    let mut command = match binary {
        Some(binary) => Command::new(binary),
        None => {
            let this = std::env::current_exe().context("finding this executable")?;
            let mut command = Command::new(this);
            command.arg("agent");
            command
        }
    };
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(agent_env_var) {
            command.env_remove(name);
        }
    }
    command.spawn().with_context(|| match binary {
        Some(binary) => format!("starting the agent {}", binary.display()),
        None => "starting the built-in agent".to_owned(),
    })
}

/// Asks the agent to stop (SIGTERM, its one shutdown path), then kills it if it lingers.
async fn stop_agent(agent: &mut Child) {
    if let Ok(Some(_)) = agent.try_wait() {
        return;
    }
    #[cfg(unix)]
    if let Some(pid) = agent.id().and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(AGENT_STOP_GRACE, agent.wait())
        .await
        .is_err()
    {
        let _ = agent.kill().await;
    }
}

/// Prints where this machine shows up once its first inventory is stored.
async fn watch_first_report(store: Store, tenant_id: String, dashboard: String) {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(agents) = store.list_agents(&tenant_id).await else {
            continue;
        };
        for agent in agents {
            if let Ok(Some(_)) = store.inventory(&tenant_id, &agent.id).await {
                println!(
                    "this machine ({}) reported its inventory after {:.1} s: {dashboard}agents/{}",
                    agent.hostname,
                    started.elapsed().as_secs_f64(),
                    agent.id
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_variables_are_withheld() {
        for name in [
            "MUSTER_API_BASE_URL",
            "TENANT_ID",
            "API_TOKEN",
            "TELEMETRY_INTERVAL",
        ] {
            assert!(agent_env_var(name), "{name}");
        }
        for name in ["PATH", "HOME", "RUST_LOG", "TENANT"] {
            assert!(!agent_env_var(name), "{name}");
        }
    }

    #[test]
    fn toml_strings_are_quoted() {
        assert_eq!(toml_string("mst_enrol_abc"), "\"mst_enrol_abc\"");
        assert_eq!(toml_string("a\"b"), "'a\"b'");
    }
}
