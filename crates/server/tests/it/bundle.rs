//! The enrolment bundle (`GET /api/admin/bundle`, the dashboard's `/bundle`), the enrolment
//! tokens' limits (single use, expiry, counted once per agent, races), and `muster-server
//! serve` under systemd's notify protocol.
//!
//! Archives are read with the system's `tar` (the oracle: what an admin will run), and the
//! bundle's `agent.toml` is checked by the agent's own `config check` and used to register
//! for real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use muster_server::BundleConfig;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{TestServer, assert_error, backends, client, public_key, send};

const PLATFORM: &str = "linux-x86_64";

/// A stand-in agent binary: records its arguments beside itself, so `install.sh`'s call can be
/// checked.
const RECORDING_AGENT: &str = "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n";

/// A directory of agent binaries holding `RECORDING_AGENT` as `muster-agent-<platform>`.
fn agent_dir(platforms: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for platform in platforms {
        let path = dir.path().join(format!("muster-agent-{platform}"));
        std::fs::write(&path, RECORDING_AGENT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn bundle_config(dir: &Path) -> BundleConfig {
    BundleConfig {
        public_url: None,
        agent_dir: Some(dir.to_owned()),
    }
}

/// `GET /api/admin/bundle?query` with `token` (if any): status, headers, body.
async fn download(
    server: &TestServer,
    token: Option<&str>,
    query: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = client().get(server.url(&format!("/api/admin/bundle?{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// An error answer of the bundle endpoint as `(status, json)`.
fn json_answer(answer: &(StatusCode, HeaderMap, Vec<u8>)) -> (StatusCode, Value) {
    (answer.0, serde_json::from_slice(&answer.2).unwrap())
}

/// A bundle downloaded and unpacked by the system's tar.
struct Unpacked {
    _dir: tempfile::TempDir,
    /// The archive's one directory.
    root: PathBuf,
    /// `tar -tvzf`: one line per entry.
    listing: Vec<String>,
    config: toml::Table,
}

impl Unpacked {
    fn from(bytes: &[u8]) -> Unpacked {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("bundle.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        let listing = Command::new("tar")
            .arg("-tvzf")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{listing:?}");
        let listing: Vec<String> = String::from_utf8(listing.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let status = Command::new("tar")
            .arg("-xpzf")
            .arg(&archive)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let mut entries: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(entries.len(), 1, "one directory at the top");
        let root = entries.pop().unwrap().path();
        let config =
            toml::from_str(&std::fs::read_to_string(root.join("agent.toml")).unwrap()).unwrap();
        Unpacked {
            _dir: dir,
            root,
            listing,
            config,
        }
    }

    fn api(&self, key: &str) -> &str {
        self.config["api"][key].as_str().unwrap()
    }

    fn mode(&self, name: &str) -> u32 {
        std::fs::metadata(self.root.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }
}

/// Registers an agent with the bundle's own configuration, as the agent would.
async fn register_with(bundle: &Unpacked, key_seed: u8) -> (StatusCode, Value) {
    send(
        client()
            .post(format!("{}/agents/register", bundle.api("base_url")))
            .bearer_auth(bundle.api("auth_token"))
            .header("content-type", "application/json")
            .body(
                json!({
                    "tenant_id": bundle.api("tenant_id"),
                    "hostname": format!("host-{key_seed}"),
                    "public_key": public_key(key_seed),
                })
                .to_string(),
            ),
    )
    .await
}

#[tokio::test]
async fn the_bundle_holds_the_agent_its_configuration_and_installer() {
    let dir = agent_dir(&[PLATFORM, "linux-aarch64"]);
    for backend in backends() {
        let server = TestServer::start_with_bundle_on(&backend, bundle_config(dir.path())).await;
        let tenant = server.tenant("acme").await;
        let answer = download(
            &server,
            Some(tenant.admin_token.expose()),
            &format!("platform={PLATFORM}&format=tar.gz"),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK);
        let stem = format!("muster-agent-{}-{PLATFORM}", tenant.tenant.id);
        assert_eq!(answer.1["content-type"], "application/gzip");
        assert_eq!(
            answer.1["content-disposition"],
            format!("attachment; filename=\"{stem}.tar.gz\"").as_str()
        );
        assert_eq!(answer.1["cache-control"], "no-store");

        let bundle = Unpacked::from(&answer.2);
        assert_eq!(
            bundle.root.file_name().unwrap().to_str(),
            Some(stem.as_str())
        );
        // Names, modes and owners as stored in the archive, in order.
        let entries: Vec<(String, String, String)> = bundle
            .listing
            .iter()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (
                    fields[0].to_owned(),
                    fields[1].to_owned(),
                    fields[fields.len() - 1].to_owned(),
                )
            })
            .collect();
        let expect =
            |mode: &str, name: &str| (mode.to_owned(), "root/root".to_owned(), name.to_owned());
        assert_eq!(
            entries,
            vec![
                expect("drwxr-xr-x", &format!("{stem}/")),
                expect("-rw-------", &format!("{stem}/agent.toml")),
                expect("-rwxr-xr-x", &format!("{stem}/install.sh")),
                expect("-rwxr-xr-x", &format!("{stem}/muster-agent")),
            ]
        );
        assert_eq!(bundle.mode("agent.toml"), 0o600);
        assert_eq!(bundle.mode("install.sh"), 0o755);
        assert_eq!(bundle.mode("muster-agent"), 0o755);
        assert_eq!(
            std::fs::read(bundle.root.join("muster-agent")).unwrap(),
            RECORDING_AGENT.as_bytes()
        );
        assert_eq!(
            std::fs::read_to_string(bundle.root.join("install.sh")).unwrap(),
            muster_server::bundle::INSTALL_SH
        );

        // agent.toml: this server (from the request's Host), the tenant, a new enrolment
        // token, the tenant's signing key pinned.
        assert_eq!(bundle.api("base_url"), format!("{}/api", server.base));
        assert_eq!(bundle.api("tenant_id"), tenant.tenant.id);
        let token = bundle.api("auth_token");
        assert!(token.starts_with("mst_enrol_"));
        assert_ne!(token, tenant.enrol_token.expose());
        let key = muster_server::commands::tenant_key(&server.store, &tenant.tenant.id)
            .await
            .unwrap();
        assert_eq!(
            bundle.config["security"]["command_signing_key"].as_str(),
            Some(key.public_key.as_str())
        );
        // The agent itself accepts the file.
        let check = Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(["agent", "config", "check", "--config"])
            .arg(bundle.root.join("agent.toml"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let shown = String::from_utf8_lossy(&check.stdout);
        assert!(shown.contains(&tenant.tenant.id), "{shown}");
        assert!(
            !shown.contains(token),
            "config check shows the token: {shown}"
        );

        // The token is listed as the bundle's, unlimited, unused; then it registers agents.
        let (_, list) = server
            .get("/api/admin/tokens?kind=enrol", tenant.admin_token.expose())
            .await;
        let listed = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("bundle {PLATFORM}"))
            .unwrap()
            .clone();
        assert_eq!(listed["max_uses"], Value::Null);
        assert_eq!(listed["uses"], 0);
        assert_eq!(listed["expires_at"], Value::Null);
        for seed in 1..=3 {
            let (status, body) = register_with(&bundle, seed).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (_, list) = server
            .get("/api/admin/tokens?kind=enrol", tenant.admin_token.expose())
            .await;
        let uses: Vec<&Value> = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"] == listed["id"])
            .map(|t| &t["uses"])
            .collect();
        assert_eq!(uses, [&json!(3)]);

        // Another platform is another binary; the default is the server's own platform.
        let answer = download(
            &server,
            Some(tenant.admin_token.expose()),
            "platform=linux-aarch64",
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK);
        assert!(
            Unpacked::from(&answer.2)
                .root
                .ends_with(format!("muster-agent-{}-linux-aarch64", tenant.tenant.id))
        );
    }
}

#[tokio::test]
async fn a_bundle_needs_an_admin_token_and_is_its_own_tenants() {
    let dir = agent_dir(&[PLATFORM]);
    for backend in backends() {
        let server = TestServer::start_with_bundle_on(&backend, bundle_config(dir.path())).await;
        let acme = server.tenant("acme").await;
        let globex = server.tenant("globex").await;
        let query = format!("platform={PLATFORM}");
        for token in [
            None,
            Some(acme.enrol_token.expose()),
            Some("mst_admin_nonsense"),
        ] {
            let answer = download(&server, token, &query).await;
            assert_error(
                &json_answer(&answer),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            );
        }
        // An agent's token is no admin token either.
        let (_, agent_token) = server
            .register(&acme, json!({"hostname": "a", "public_key": public_key(1)}))
            .await;
        let answer = download(&server, Some(&agent_token), &query).await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED);

        // The admin token decides the tenant: globex's token gets globex's bundle, whose
        // enrolment token cannot register into acme.
        let answer = download(&server, Some(globex.admin_token.expose()), &query).await;
        assert_eq!(answer.0, StatusCode::OK);
        let bundle = Unpacked::from(&answer.2);
        assert_eq!(bundle.api("tenant_id"), globex.tenant.id);
        let (status, _) = send(
            client()
                .post(server.url("/api/agents/register"))
                .bearer_auth(bundle.api("auth_token"))
                .header("content-type", "application/json")
                .body(json!({"tenant_id": acme.tenant.id, "hostname": "x"}).to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Nor does acme's list show it.
        let (_, list) = server
            .get("/api/admin/tokens", acme.admin_token.expose())
            .await;
        assert!(
            list["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["name"] != format!("bundle {PLATFORM}")),
            "{list}"
        );
    }
}

#[tokio::test]
async fn a_single_use_bundle_registers_one_agent_and_again_that_one() {
    let dir = agent_dir(&[PLATFORM]);
    for backend in backends() {
        let server = TestServer::start_with_bundle_on(&backend, bundle_config(dir.path())).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let answer = download(
            &server,
            Some(admin),
            &format!("platform={PLATFORM}&single_use=true"),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK);
        let bundle = Unpacked::from(&answer.2);

        let (status, first) = register_with(&bundle, 7).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        // The same agent again (registration is idempotent): no second use.
        let (status, again) = register_with(&bundle, 7).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["agent_id"], first["agent_id"]);
        // Another agent: used up, said plainly, the token not echoed.
        let refused = register_with(&bundle, 8).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
        let message = refused.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("used up"), "{message}");
        assert!(!message.contains(bundle.api("auth_token")));
        // The refused registration stored nothing.
        let (_, agents) = server.get("/api/admin/agents", admin).await;
        assert_eq!(agents["total"], 1, "{agents}");

        let (_, list) = server.get("/api/admin/tokens?kind=enrol", admin).await;
        let token = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["max_uses"] == 1)
            .unwrap();
        assert_eq!(token["uses"], 1, "{token}");

        // Revoked, even the agent that used it cannot come back with it.
        let id = token["id"].as_str().unwrap();
        let (status, _) = server
            .delete(&format!("/api/admin/tokens/{id}"), admin)
            .await;
        assert_eq!(status, StatusCode::OK);
        let refused = register_with(&bundle, 7).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
        let message = refused.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("revoked"), "{message}");
    }
}

#[tokio::test]
async fn a_time_limited_bundle_stops_registering_at_its_expiry() {
    let dir = agent_dir(&[PLATFORM]);
    for backend in backends() {
        let server = TestServer::start_with_bundle_on(&backend, bundle_config(dir.path())).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let asked = jiff::Timestamp::now().as_second();
        let answer = download(
            &server,
            Some(admin),
            &format!("platform={PLATFORM}&expires_in_s=600"),
        )
        .await;
        assert_eq!(answer.0, StatusCode::OK);
        let bundle = Unpacked::from(&answer.2);
        // The token expires 600 s after it was made.
        let (_, list) = server.get("/api/admin/tokens?kind=enrol", admin).await;
        let token = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("bundle {PLATFORM}"))
            .unwrap()
            .clone();
        let expires: jiff::Timestamp = token["expires_at"].as_str().unwrap().parse().unwrap();
        let lifetime = expires.as_second() - asked;
        assert!((600..=610).contains(&lifetime), "{token}");
        assert_eq!(token["max_uses"], Value::Null);

        let (status, body) = register_with(&bundle, 1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Time passes (rather than waiting 600 s, the expiry is moved to a second ago).
        let id = token["id"].as_str().unwrap();
        let past = jiff::Timestamp::now().as_second() - 1;
        crate::dashboard::sql(
            &server,
            format!("UPDATE tokens SET expires_at = {past} WHERE id = '{id}'"),
        )
        .await;
        let refused = register_with(&bundle, 2).await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
        let message = refused.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("expired"), "{message}");
        // Expired is expired for the agent that used it too.
        let refused = register_with(&bundle, 1).await;
        assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        let (_, agents) = server.get("/api/admin/agents", admin).await;
        assert_eq!(agents["total"], 1, "{agents}");
    }
}

#[tokio::test]
async fn racing_registrations_take_a_single_use_token_once() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        for round in 0..3u8 {
            let (status, created) = server
                .post(
                    "/api/admin/tokens",
                    tenant.admin_token.expose(),
                    &json!({"kind": "enrol", "max_uses": 1}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            assert_eq!(created["max_uses"], 1);
            let token = created["token"].as_str().unwrap().to_owned();
            let racers = (0..8u8).map(|k| {
                let url = server.url("/api/agents/register");
                let token = token.clone();
                let tenant_id = tenant.tenant.id.clone();
                tokio::spawn(async move {
                    let body = json!({
                        "tenant_id": tenant_id,
                        "hostname": format!("racer-{round}-{k}"),
                        "public_key": public_key(round * 8 + k + 1),
                    });
                    send(
                        client()
                            .post(url)
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .body(body.to_string()),
                    )
                    .await
                })
            });
            let mut won = 0;
            for racer in racers.collect::<Vec<_>>() {
                let (status, body) = racer.await.unwrap();
                match status {
                    StatusCode::OK => won += 1,
                    StatusCode::UNAUTHORIZED => {
                        assert!(
                            body["error"]["message"]
                                .as_str()
                                .unwrap()
                                .contains("used up")
                        )
                    }
                    other => panic!("{other}: {body}"),
                }
            }
            assert_eq!(won, 1, "round {round}");
        }
        let (_, agents) = server
            .get("/api/admin/agents", tenant.admin_token.expose())
            .await;
        assert_eq!(agents["total"], 3, "one agent per token: {agents}");
    }
}

#[tokio::test]
async fn token_limits_are_checked_when_made() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        for body in [
            json!({"kind": "admin", "max_uses": 1}),
            json!({"kind": "enrol", "max_uses": 0}),
            json!({"kind": "enrol", "max_uses": -3}),
            json!({"kind": "enrol", "max_uses": 1_000_001}),
        ] {
            let answer = server.post("/api/admin/tokens", admin, &body).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        }
        let (status, created) = server
            .post(
                "/api/admin/tokens",
                admin,
                &json!({"kind": "enrol", "max_uses": 2, "expires_in_s": 3600}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            (created["max_uses"].clone(), created["uses"].clone()),
            (json!(2), json!(0))
        );
        assert!(created["expires_at"].is_string());
    }
}

#[test]
fn the_cli_makes_limited_tokens_and_lists_their_uses() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("muster.db");
    let database = database.to_str().unwrap();
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(["admin", "--database-url", database])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = admin(&["tenant", "create", "acme"]);
    assert!(ok, "{err}");
    let (ok, out, err) = admin(&[
        "token",
        "create",
        "--tenant",
        "acme",
        "--kind",
        "enrol",
        "--max-uses",
        "1",
        "--expires-in",
        "1d",
        "--json",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["max_uses"], 1);
    assert_eq!(created["uses"], 0);
    assert!(created["expires_at"].is_string());
    let id = created["id"].as_str().unwrap();

    let (ok, out, _) = admin(&["token", "list", "--tenant", "acme"]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(line.contains("uses 0 of 1"), "{line}");
    assert!(line.contains("expires "), "{line}");
    // The tenant's own enrolment token: unlimited.
    assert!(
        out.lines()
            .any(|l| l.contains("enrol") && l.contains("uses 0  ")),
        "{out}"
    );

    let (ok, _, err) = admin(&[
        "token",
        "create",
        "--tenant",
        "acme",
        "--kind",
        "admin",
        "--max-uses",
        "1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("only enrolment tokens have a number of uses"),
        "{err}"
    );
}

#[tokio::test]
async fn bundle_requests_that_cannot_be_met_say_why() {
    let dir = agent_dir(&[PLATFORM]);
    let backend = &backends()[0];
    let unconfigured = TestServer::start_on(backend).await;
    let tenant = unconfigured.tenant("acme").await;
    let answer = download(&unconfigured, Some(tenant.admin_token.expose()), "").await;
    let answer = json_answer(&answer);
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[bundle] agent_dir")
    );

    let server = TestServer::start_with_bundle_on(backend, bundle_config(dir.path())).await;
    let tenant = server.tenant("acme").await;
    let admin = Some(tenant.admin_token.expose());
    let answer = json_answer(&download(&server, admin, "platform=linux-riscv64").await);
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("linux-riscv64") && message.contains("available: linux-x86_64"),
        "{message}"
    );
    assert!(
        !message.contains(dir.path().to_str().unwrap()),
        "no server path: {message}"
    );
    for query in [
        "platform=../../etc/passwd",
        "platform=linux%2Fx86_64",
        "format=zip",
        "format=rar",
        "expires_in_s=0",
        "expires_in_s=99999999999999999",
    ] {
        let query = if query.starts_with("platform") {
            query.to_owned()
        } else {
            format!("{query}&platform={PLATFORM}")
        };
        let answer = json_answer(&download(&server, admin, &query).await);
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    let answer = json_answer(&download(&server, admin, "single_use=maybe").await);
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    // None of the refusals made a token.
    let (_, list) = server
        .get("/api/admin/tokens?kind=enrol", tenant.admin_token.expose())
        .await;
    assert_eq!(list["total"], 1, "{list}");
}

#[tokio::test]
async fn the_public_url_is_what_agents_are_pointed_at() {
    let dir = agent_dir(&[PLATFORM]);
    let config = BundleConfig {
        public_url: Some("https://muster.example.com:8443".into()),
        agent_dir: Some(dir.path().to_owned()),
    };
    let server = TestServer::start_with_bundle_on(&backends()[0], config).await;
    let tenant = server.tenant("acme").await;
    let answer = download(
        &server,
        Some(tenant.admin_token.expose()),
        &format!("platform={PLATFORM}"),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    let bundle = Unpacked::from(&answer.2);
    assert_eq!(
        bundle.api("base_url"),
        "https://muster.example.com:8443/api"
    );

    // Without one, a proxy's word on HTTPS is taken with the Host.
    let plain = TestServer::start_with_bundle_on(&backends()[0], bundle_config(dir.path())).await;
    let tenant = plain.tenant("acme").await;
    let response = client()
        .get(plain.url(&format!("/api/admin/bundle?platform={PLATFORM}")))
        .bearer_auth(tenant.admin_token.expose())
        .header("host", "muster.internal:9000")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bundle = Unpacked::from(&response.bytes().await.unwrap());
    assert_eq!(bundle.api("base_url"), "https://muster.internal:9000/api");
}

#[tokio::test]
async fn a_large_agent_streams_whole() {
    // 4 MiB of incompressible bytes: 64 chunks through a channel of 4 (debug builds gzip
    // slowly, so not more).
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 4 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.path().join(format!("muster-agent-{PLATFORM}")), &data).unwrap();
    let server = TestServer::start_with_bundle_on(&backends()[0], bundle_config(dir.path())).await;
    let tenant = server.tenant("acme").await;
    let answer = download(
        &server,
        Some(tenant.admin_token.expose()),
        &format!("platform={PLATFORM}"),
    )
    .await;
    assert_eq!(answer.0, StatusCode::OK);
    let bundle = Unpacked::from(&answer.2);
    assert!(std::fs::read(bundle.root.join("muster-agent")).unwrap() == data);
}

#[tokio::test]
async fn the_dashboard_offers_the_bundle_behind_its_session_and_form_token() {
    let dir = agent_dir(&[PLATFORM, "linux-aarch64"]);
    let server = TestServer::start_with_bundle_on(&backends()[0], bundle_config(dir.path())).await;
    let tenant = server.tenant("acme").await;
    let browser = crate::dashboard::browser();

    // Not logged in: the login page.
    let response = browser.get(server.url("/bundle")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let cookie = crate::dashboard::login(&server, tenant.admin_token.expose()).await;
    let page = browser
        .get(server.url("/bundle"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [
        "<option value=\"linux-aarch64\">",
        "name=\"single_use\"",
        "name=\"expires_in_s\"",
        "action=\"/bundle\"",
    ] {
        assert!(page.contains(text), "{text} not in {page}");
    }
    let marker = "name=\"form_token\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let form_token = page[start..start + 64].to_owned();

    let post = |fields: String, origin: Option<&'static str>| {
        let mut request = browser
            .post(server.url("/bundle"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let fields = |token: &str| {
        format!(
            "form_token={}&platform={PLATFORM}&single_use=on&expires_in_s=3600",
            crate::dashboard::encode(token)
        )
    };
    // A stale form token, another site: refused.
    let refused = post(fields(&"0".repeat(64)), None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = post(fields(&form_token), Some("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let response = post(fields(&form_token), None).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let bundle = Unpacked::from(&response.bytes().await.unwrap());
    assert_eq!(bundle.api("tenant_id"), tenant.tenant.id);
    let (_, list) = server
        .get("/api/admin/tokens?kind=enrol", tenant.admin_token.expose())
        .await;
    let made = list["tokens"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(made["max_uses"], 1, "{made}");
    assert!(made["expires_at"].is_string(), "{made}");
    let (status, body) = register_with(&bundle, 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Runs the bundle's `install.sh` with `args`, `PATH` starting with `path_first` if given.
fn run_install(
    bundle: &Unpacked,
    args: &[&str],
    path_first: Option<&Path>,
) -> std::process::Output {
    let path = std::env::var("PATH").unwrap();
    let path = match path_first {
        Some(dir) => format!("{}:{path}", dir.display()),
        None => path,
    };
    // From another directory, as `sudo ./dir/install.sh` would be.
    Command::new("sh")
        .arg(bundle.root.join("install.sh"))
        .args(args)
        .current_dir("/")
        .env("PATH", path)
        .output()
        .unwrap()
}

#[tokio::test]
async fn install_sh_calls_service_install_as_agreed_and_wants_root() {
    let dir = agent_dir(&[PLATFORM]);
    let server = TestServer::start_with_bundle_on(&backends()[0], bundle_config(dir.path())).await;
    let tenant = server.tenant("acme").await;
    let answer = download(
        &server,
        Some(tenant.admin_token.expose()),
        &format!("platform={PLATFORM}"),
    )
    .await;
    let bundle = Unpacked::from(&answer.2);
    let here = bundle.root.to_str().unwrap().to_owned();

    // A POSIX shell reads it (dash is Debian's sh).
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(bundle.root.join("install.sh"))
        .status()
        .unwrap();
    assert!(syntax.success());

    let scratch = tempfile::tempdir().unwrap();
    let out = run_install(
        &bundle,
        &["--root", scratch.path().to_str().unwrap(), "--sysv"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let args = std::fs::read_to_string(bundle.root.join("args")).unwrap();
    let expected = [
        "service",
        "install",
        "--binary",
        &format!("{here}/muster-agent"),
        "--config",
        &format!("{here}/agent.toml"),
        "--root",
        scratch.path().to_str().unwrap(),
        "--sysv",
    ];
    assert_eq!(args.lines().collect::<Vec<_>>(), expected);

    // Not root and no --root: refused before the agent runs. `id` is made to say uid 1000,
    // so this holds whoever runs the test.
    std::fs::remove_file(bundle.root.join("args")).unwrap();
    let fake = tempfile::tempdir().unwrap();
    let id = fake.path().join("id");
    std::fs::write(&id, "#!/bin/sh\necho 1000\n").unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_install(&bundle, &[], Some(fake.path()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run as root"),
        "{out:?}"
    );
    assert!(!bundle.root.join("args").exists());
    // `--root=DIR` counts as --root.
    let out = run_install(
        &bundle,
        &[&format!("--root={}", scratch.path().display())],
        Some(fake.path()),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(bundle.root.join("args").exists());
}

/// The real `muster-agent service install` (the other half of issue 6), driven by the bundle's
/// `install.sh` into a scratch root. The bundle's "agent binary" is a shim running the agent
/// built into `muster-server`.
#[tokio::test]
async fn install_sh_installs_the_bundle_into_a_scratch_root() {
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join(format!("muster-agent-{PLATFORM}"));
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec '{}' agent \"$@\"\n",
            env!("CARGO_BIN_EXE_muster-server")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start_with_bundle_on(&backends()[0], bundle_config(dir.path())).await;
    let tenant = server.tenant("acme").await;
    let answer = download(
        &server,
        Some(tenant.admin_token.expose()),
        &format!("platform={PLATFORM}&single_use=true"),
    )
    .await;
    let bundle = Unpacked::from(&answer.2);
    let root = tempfile::tempdir().unwrap();
    let out = run_install(
        &bundle,
        &["--root", root.path().to_str().unwrap(), "--no-start"],
        None,
    );
    assert!(out.status.success(), "{out:?}");

    // Paths, owners and modes as `service install --root` (branch pkg) writes them.
    let r = root.path();
    let config = r.join("etc/muster/agent.toml");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(bundle.root.join("agent.toml")).unwrap()
    );
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("muster:x:"))
        .and_then(|rest| rest.split(':').next())
        .expect("the muster group")
        .parse()
        .unwrap();
    let meta = std::fs::metadata(&config).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o640, 0, gid)
    );
    assert!(
        std::fs::read_to_string(r.join("etc/passwd"))
            .unwrap()
            .lines()
            .any(|l| l.starts_with("muster:x:")),
        "the muster user"
    );
    let binary = r.join("usr/local/bin/muster-agent");
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(&shim).unwrap()
    );
    assert_eq!(std::fs::metadata(&binary).unwrap().mode() & 0o7777, 0o755);
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/muster-agent.service")).unwrap();
    assert!(unit.contains("/usr/local/bin/muster-agent"), "{unit}");
    assert!(
        std::fs::symlink_metadata(
            r.join("etc/systemd/system/multi-user.target.wants/muster-agent.service")
        )
        .unwrap()
        .file_type()
        .is_symlink(),
        "enabled"
    );
}

// ----- sd_notify ------------------------------------------------------------------------

/// Waits up to `within` for the next datagram on `socket`.
fn next_message(socket: &std::os::unix::net::UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn serve_speaks_sd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let database = format!("sqlite://{}", dir.path().join("muster.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database,
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        // Pings due every 150 ms.
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();

    let ready = next_message(&socket, Duration::from_secs(60)).expect("READY=1");
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready}");
    let address = lines
        .next()
        .and_then(|l| l.strip_prefix("STATUS=listening on "))
        .unwrap_or_else(|| panic!("{ready}"))
        .to_owned();
    // Ready means migrated and serving: the database answers at once.
    let (status, body) = send(client().get(format!("http://{address}/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < Duration::from_secs(60));

    // Watchdog pings, about every 150 ms.
    let before = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            next_message(&socket, Duration::from_secs(5)).as_deref(),
            Some("WATCHDOG=1")
        );
    }
    assert!(
        before.elapsed() < Duration::from_secs(3),
        "{:?}",
        before.elapsed()
    );

    // SIGHUP does not reload, and does not kill.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the server"
    );
    let (status, _) = send(client().get(format!("http://{address}/healthz"))).await;
    assert_eq!(status, StatusCode::OK);

    // SIGTERM: STOPPING=1, then a clean exit.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline {
        match next_message(&socket, Duration::from_secs(1)).as_deref() {
            Some("STOPPING=1") => {
                stopping = true;
                break;
            }
            Some("WATCHDOG=1") => continue,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    assert!(stopping, "no STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn serve_stops_cleanly_on_sigterm_as_soon_as_it_listens() {
    // SIGTERM may come while migrations run (a unit stopped during its start): the handlers
    // are installed before the listener is bound, so the stop is clean (exit 0), not the
    // signal's default death. No NOTIFY_SOCKET here: nothing is told, nothing breaks.
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("muster.db").display());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster-server"))
        .args([
            "serve",
            "--listen",
            &address.to_string(),
            "--database-url",
            &database,
        ])
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "300000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut up = false;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(address).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(up, "the server never listened");
    assert!(child.wait().unwrap().success());
}
