//! A server on 127.0.0.1:0 with its database in a temporary directory, and a small client.

use std::sync::Once;

use muster_server::admin::CreatedTenant;
use muster_server::store::Store;
use muster_server::{Limits, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub store: Store,
    /// Holds the database; removed when the server is dropped.
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("muster.db").display());
        let store = Store::open(&database_url).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = ServerConfig {
            listen: listener.local_addr().unwrap(),
            database_url,
            limits,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            muster_server::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            base,
            store,
            _dir: dir,
            stop: Some(stop),
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
