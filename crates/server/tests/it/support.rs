//! A server on 127.0.0.1:0 over a fresh database, and a small client.
//!
//! Tests that start a server run once per [`backends`]: SQLite in a temporary directory always,
//! and PostgreSQL when `MUSTER_TEST_DATABASE_URL` names a server where the tests may create
//! databases (each server gets its own, dropped with it).

use std::sync::Once;
use std::time::Duration;

use jiff::Timestamp;
use muster_server::admin::CreatedTenant;
use muster_server::store::Store;
use muster_server::{BundleConfig, Limits, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::sync::oneshot;

/// The variable naming a PostgreSQL database the tests connect to in order to create and drop
/// their own databases (`postgres://USER@HOST:PORT/DB`).
const DATABASE_URL_VAR: &str = "MUSTER_TEST_DATABASE_URL";

/// A database backend to run a test against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The admin url from `MUSTER_TEST_DATABASE_URL`.
    Postgres(String),
}

/// The backends every server test runs on: SQLite, and PostgreSQL when its url is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if let Some(url) = std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
    {
        backends.push(Backend::Postgres(url));
    }
    backends
}

/// A database made for one test server, dropped with it.
enum TestDatabase {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Creates the database; returns it and the url the server opens.
    async fn create(backend: &Backend) -> (TestDatabase, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("muster.db").display());
                (TestDatabase::Sqlite { _dir: dir }, url)
            }
            Backend::Postgres(admin_url) => {
                let name = format!("muster_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
                // The name is ours: a fixed prefix and a UUID in hex.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let url = with_database(admin_url, &name);
                let database = TestDatabase::Postgres {
                    admin_url: admin_url.clone(),
                    name,
                };
                (database, url)
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let TestDatabase::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: a thread with its
        // own runtime drops the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drop_database(&admin_url, &name))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("dropping the test database: {dropped:?}");
        }
    }
}

/// Ends the server's pooled connections to `name`, then drops it.
///
/// Not `DROP DATABASE ... WITH (FORCE)`: for a role that is not a superuser, FORCE fails when
/// an autovacuum worker happens to be in the database (it belongs to no role the test's role
/// may signal), which a test that bulk-loads rows makes likely. A plain DROP cancels
/// autovacuum itself; our own connections are ended first, and a race with a connection still
/// closing is retried.
async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    let mut attempt = 0;
    loop {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&mut admin)
        .await?;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut admin)
        .await;
        match dropped {
            Ok(_) => break,
            // 55006: object_in_use, a connection not yet gone; try again shortly.
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && attempt < 50 =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}

/// `url` with its database (the path) replaced by `name`, keeping any `?query`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub store: Store,
    /// The url the server opened (tests that seed data in bulk connect to it).
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    /// The server task: done once `run` returned.
    running: Option<tokio::task::JoinHandle<()>>,
    /// Removed when the server is dropped (after `stop`, by field order).
    _database: TestDatabase,
}

impl TestServer {
    pub async fn start_on(backend: &Backend) -> TestServer {
        TestServer::start_with_on(backend, Limits::default()).await
    }

    pub async fn start_with_on(backend: &Backend, limits: Limits) -> TestServer {
        TestServer::start_configured_on(backend, limits, BundleConfig::default()).await
    }

    /// A server making enrolment bundles from `bundle`.
    pub async fn start_with_bundle_on(backend: &Backend, bundle: BundleConfig) -> TestServer {
        TestServer::start_configured_on(backend, Limits::default(), bundle).await
    }

    pub async fn start_configured_on(
        backend: &Backend,
        limits: Limits,
        bundle: BundleConfig,
    ) -> TestServer {
        let (database, database_url) = TestDatabase::create(backend).await;
        let store = Store::open(&database_url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = ServerConfig {
            listen: listener.local_addr().unwrap(),
            database_url: database_url.clone(),
            limits,
            bundle,
            ..ServerConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            muster_server::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            base,
            store,
            database_url,
            stop: Some(stop),
            running: Some(running),
            _database: database,
        }
    }

    /// Stops the server gracefully and waits until `run` has returned; its database stays
    /// (readable through `store`) until the `TestServer` is dropped.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.expect("the server stops cleanly");
        }
    }

    /// Waits until the heartbeat that reported `version` for `agent_id` is stored: heartbeats
    /// are answered at once and written behind (`[limits] heartbeat_flush_ms`).
    pub async fn heartbeat_stored(&self, tenant_id: &str, agent_id: &str, version: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let agent = self
                .store
                .agent(tenant_id, agent_id)
                .await
                .unwrap()
                .unwrap();
            if agent.agent_version.as_deref() == Some(version) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the heartbeat of {agent_id} ({version}) was not stored within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn tenant(&self, name: &str) -> CreatedTenant {
        muster_server::admin::create_tenant(&self.store, name)
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        send(
            client()
                .post(self.url(path))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// `GET path` with `token` as bearer.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        send(client().get(self.url(path)).bearer_auth(token)).await
    }

    /// `DELETE path` with `token` as bearer.
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        send(client().delete(self.url(path)).bearer_auth(token)).await
    }

    /// Registers an agent; returns its id and token.
    pub async fn register(&self, tenant: &CreatedTenant, body: Value) -> (String, String) {
        let mut body = body;
        body["tenant_id"] = json!(tenant.tenant.id);
        let (status, answer) = self
            .post("/api/agents/register", tenant.enrol_token.expose(), &body)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        (
            answer["agent_id"].as_str().unwrap().to_owned(),
            answer["agent_token"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .tls_certs_only(Vec::new())
        .build()
        .unwrap()
}

/// Sends a request; the answer's status and JSON body (`null` when empty).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("a non-json answer ({status}): {e}: {bytes:?}"))
    };
    (status, body)
}

/// Asserts an error answer: the status and `{"error": {"code", "message"}}`.
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].is_string(), "{}", answer.1);
}

/// A base64 ed25519-sized public key, distinct per `seed`.
pub fn public_key(seed: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([seed; 32])
}

/// A heartbeat body of `agent_id`, promising `interval_s` if given.
pub fn heartbeat(agent_id: &str, interval_s: Option<u64>) -> Value {
    let mut body = json!({
        "agent_id": agent_id, "datetime": Timestamp::now(), "agent_version": "1.2.3",
        "uptime_s": 5, "health": {"scans_completed": 3, "errors": 0, "spool_items": 0,
        "spool_bytes": 0, "dropped_reports": 0, "queue_depth": 0, "last_inventory": null,
        "last_telemetry": null}
    });
    if let Some(interval) = interval_s {
        body["heartbeat_interval_s"] = json!(interval);
    }
    body
}
