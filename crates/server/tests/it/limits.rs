//! What a hostile or broken client can send: bad tokens with huge bodies, oversize and
//! gzip-bomb bodies, malformed JSON. Every answer is a JSON error, never a 500.

use std::io::Write;
use std::time::Duration;

use muster_server::Limits;
use muster_server::store::HeartbeatRow;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, assert_error, backends, client, heartbeat, public_key, send};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Sends the head of a request announcing a 1 GiB body, and a little of the body, then reads
/// the answer while the rest is still unsent.
async fn answer_to_unsent_body(server: &TestServer, authorization: Option<&str>) -> String {
    let address = server.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/system/report HTTP/1.1\r\nHost: {address}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 64 * 1024]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the server answers before the body is sent")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn a_bad_token_is_refused_before_the_body_is_read() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let unknown = muster_server::token::Token::generate(muster_server::token::TokenKind::Agent);
        for authorization in [
            None,
            Some("Basic dXNlcjpwYXNz".to_owned()),
            Some("Bearer garbage".to_owned()),
            Some(format!("Bearer {}", unknown.expose())),
            Some(format!("Bearer {}", tenant.enrol_token.expose())),
        ] {
            let answer = answer_to_unsent_body(&server, authorization.as_deref()).await;
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{authorization:?}: {answer}"
            );
            assert!(answer.contains("\"unauthorized\""), "{answer}");
        }
    }
}

#[tokio::test]
async fn oversize_bodies_and_gzip_bombs_are_413() {
    for backend in backends() {
        let limit = 128 * 1024;
        let server = TestServer::start_with_on(
            &backend,
            Limits {
                max_body_bytes: limit,
                ..Limits::default()
            },
        )
        .await;
        let tenant = server.tenant("acme").await;
        let (_, token) = server
            .register(
                &tenant,
                json!({"hostname": "h", "machine_id": null, "public_key": public_key(1)}),
            )
            .await;
        let url = server.url("/api/system/report");

        // Declared too large.
        let big = format!("{{\"hostname\": \"{}\"}}", "x".repeat(limit));
        let answer = send(client().post(&url).bearer_auth(&token).body(big.clone())).await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

        // Too large without a declared length (chunked).
        let answer = chunked_post(&server, &token, big.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"payload_too_large\""), "{answer}");

        // A gzip bomb: 100 MiB of spaces in ~100 KiB... kept under the limit compressed.
        let bomb = gzip(&vec![b' '; 100 * 1024 * 1024]);
        assert!(bomb.len() < limit, "{}", bomb.len());
        let answer = send(
            client()
                .post(&url)
                .bearer_auth(&token)
                .header("content-encoding", "gzip")
                .body(bomb),
        )
        .await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

        // Gzip within the limit is read.
        let seed = json!({"hostname": "h", "cpu_info": "x", "system_metrics": {"cpu_usage": 1.0}});
        let (status, body) = send(
            client()
                .post(&url)
                .bearer_auth(&token)
                .header("content-encoding", "gzip")
                .header("content-type", "application/json")
                .body(gzip(seed.to_string().as_bytes())),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// Posts `body` with `Transfer-Encoding: chunked` (no declared length); the raw answer.
async fn chunked_post(server: &TestServer, token: &str, body: &[u8]) -> String {
    let address = server.base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/system/report HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(4096) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer and close before the whole body is sent.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "h", "machine_id": null, "public_key": public_key(1)}),
            )
            .await;
        let post = |path: &str, body: Vec<u8>| {
            client()
                .post(server.url(path))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
        };
        for path in [
            "/api/system/report",
            "/api/metrics/report",
            "/api/agents/heartbeat",
        ] {
            for body in [&b""[..], b"{not json", b"{,}", b"\xff\xfe", b"nul"] {
                let answer = send(post(path, body.to_vec())).await;
                assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
            }
            for body in [
                json!({"agent_id": 5}),
                json!([]),
                json!({"mode": "sideways"}),
                json!({"report_id": "x", "agent_id": id, "samples": "many"}),
                json!({"mode": "full", "hash": "h", "report": {"worker_reports": "no"}}),
            ] {
                let answer = send(post(path, body.to_string().into_bytes())).await;
                assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
            }
        }
        // Deeply nested JSON is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let answer = send(post("/api/system/report", deep.into_bytes())).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");

        let answer = send(
            client()
                .post(server.url("/api/system/report"))
                .bearer_auth(&token)
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
        assert_error(
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        let answer = send(
            client()
                .post(server.url("/api/system/report"))
                .bearer_auth(&token)
                .header("content-encoding", "br")
                .body("{}"),
        )
        .await;
        assert_error(
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        let answer = send(
            client()
                .post(server.url("/api/system/report"))
                .bearer_auth(&token)
                .header("content-encoding", "gzip")
                .body("not gzip at all"),
        )
        .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");

        let answer = send(client().get(server.url("/api/nowhere"))).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = send(client().get(server.url("/api/system/report"))).await;
        assert_error(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }
}

/// An agent's live token is kept in memory (`[limits] token_cache_s`): a revocation through
/// this server stops it at once; one made elsewhere (the CLI, another replica: here, straight
/// in the database) only when its entry ends, or at once with the cache off.
#[tokio::test]
async fn cached_agent_tokens_stop_at_revocation_through_the_server() {
    use muster_server::store::TokenFilter;
    use muster_server::token::TokenKind;
    for backend in backends() {
        for lifetime in [Duration::from_secs(120), Duration::ZERO] {
            let limits = Limits {
                token_cache: lifetime,
                ..Limits::default()
            };
            let server = TestServer::start_with_on(&backend, limits).await;
            let tenant = server.tenant("acme").await;
            let t = tenant.tenant.id.as_str();
            let admin = tenant.admin_token.expose();
            let server = &server;
            let beat = |id: &str, token: &str| {
                let body = heartbeat(id, None);
                let token = token.to_owned();
                async move { server.post("/api/agents/heartbeat", &token, &body).await.0 }
            };
            let register = |k: u8| {
                server.register(
                    &tenant,
                    json!({"hostname": format!("h{k}"), "public_key": public_key(k)}),
                )
            };
            let token_id = |agent: String| async move {
                let filter = TokenFilter {
                    kind: Some(TokenKind::Agent),
                    revoked: Some(false),
                    limit: 100,
                    offset: 0,
                };
                let page = server.store.list_tokens(t, &filter).await.unwrap();
                let token = page
                    .tokens
                    .iter()
                    .find(|k| k.agent_id.as_ref() == Some(&agent));
                token.unwrap().id.clone()
            };

            // Revoked in the database behind the server's back.
            let (a, a_token) = register(1).await;
            assert_eq!(beat(&a, &a_token).await, StatusCode::OK);
            let id = token_id(a.clone()).await;
            server.store.revoke_token(t, &id, 0).await.unwrap().unwrap();
            let expected = if lifetime.is_zero() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(beat(&a, &a_token).await, expected, "cache {lifetime:?}");

            // Revoked through the admin API.
            let (b, b_token) = register(2).await;
            assert_eq!(beat(&b, &b_token).await, StatusCode::OK);
            let id = token_id(b.clone()).await;
            let (status, _) = server
                .delete(&format!("/api/admin/tokens/{id}"), admin)
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(beat(&b, &b_token).await, StatusCode::UNAUTHORIZED);

            // Revoked by registering again.
            let (c, c_token) = register(3).await;
            assert_eq!(beat(&c, &c_token).await, StatusCode::OK);
            let (again, fresh) = register(3).await;
            assert_eq!(again, c);
            assert_eq!(beat(&c, &c_token).await, StatusCode::UNAUTHORIZED);
            assert_eq!(beat(&c, &fresh).await, StatusCode::OK);
        }
    }
}

/// Heartbeats arriving together are written together (one statement for the group), each
/// agent's own figures to its own row: written before the answer (`heartbeat_flush_ms = 0`)
/// and written behind (the default mode, here every 200 ms).
#[tokio::test]
async fn heartbeats_arriving_together_each_land_on_their_agent() {
    for backend in backends() {
        for flush in [Duration::ZERO, Duration::from_millis(200)] {
            let limits = Limits {
                heartbeat_flush: flush,
                ..Limits::default()
            };
            let server = TestServer::start_with_on(&backend, limits).await;
            let tenant = server.tenant("acme").await;
            let t = tenant.tenant.id.clone();
            let mut agents = Vec::new();
            for k in 0..40u8 {
                agents.push(
                    server
                        .register(
                            &tenant,
                            json!({"hostname": format!("h{k}"), "public_key": public_key(k)}),
                        )
                        .await,
                );
            }
            let mut beats = tokio::task::JoinSet::new();
            for (k, (id, token)) in agents.iter().enumerate() {
                let mut body = heartbeat(id, Some(30 + k as u64));
                body["agent_version"] = json!(format!("1.0.{k}"));
                body["health"]["scans_completed"] = json!(k);
                let request = client()
                    .post(server.url("/api/agents/heartbeat"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.to_string());
                beats.spawn(send(request));
            }
            while let Some(answer) = beats.join_next().await {
                let (status, body) = answer.unwrap();
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            for (k, (id, _)) in agents.iter().enumerate() {
                let version = format!("1.0.{k}");
                if flush.is_zero() {
                    // Answered means stored.
                    let agent = server.store.agent(&t, id).await.unwrap().unwrap();
                    assert_eq!(agent.agent_version.as_deref(), Some(version.as_str()));
                } else {
                    server.heartbeat_stored(&t, id, &version).await;
                }
                let agent = server.store.agent(&t, id).await.unwrap().unwrap();
                assert!(agent.last_seen.is_some());
                let health: serde_json::Value =
                    serde_json::from_str(agent.health.as_deref().unwrap()).unwrap();
                assert_eq!(health["scans_completed"], k);
            }
        }
    }
}

/// A group larger than one statement is cut into statements of every size (601 rows: 256 +
/// 256 + 64 + 16 + 8 + 1), each row landing on its own agent; an unknown agent is not found
/// and changes nothing.
#[tokio::test]
async fn a_large_group_of_heartbeats_lands_row_by_row() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.clone();
        let ids: Vec<String> = (0..600).map(|k| format!("agent-{k:04}")).collect();
        let values: Vec<String> = ids
            .iter()
            .map(|id| format!("('{id}', '{t}', 'host:{id}', '{id}', 0)"))
            .collect();
        crate::dashboard::sql(
            &server,
            format!(
                "INSERT INTO agents (id, tenant_id, identity, hostname, created_at) VALUES {}",
                values.join(", ")
            ),
        )
        .await;
        let row = |id: &str, k: i64| HeartbeatRow {
            tenant_id: t.clone(),
            agent_id: id.to_owned(),
            seen_at: 1_000_000 + k,
            agent_version: format!("1.0.{k}"),
            health: format!("{{\"scans_completed\":{k}}}"),
            interval_s: Some(k),
        };
        let mut rows: Vec<HeartbeatRow> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| row(id, k as i64))
            .collect();
        rows.push(row("not-an-agent", 7));
        let mut group = Some(rows);
        let found = server
            .store
            .heartbeats(&mut || group.take().unwrap_or_default())
            .await
            .unwrap();
        let mut found: Vec<String> = found
            .into_iter()
            .map(|(tenant, agent)| {
                assert_eq!(tenant, t);
                agent
            })
            .collect();
        found.sort();
        assert_eq!(found, ids);
        for (k, id) in ids.iter().enumerate() {
            let agent = server.store.agent(&t, id).await.unwrap().unwrap();
            assert_eq!(agent.last_seen, Some(1_000_000 + k as i64), "{id}");
            assert_eq!(agent.agent_version, Some(format!("1.0.{k}")), "{id}");
            assert_eq!(
                agent.health,
                Some(format!("{{\"scans_completed\":{k}}}")),
                "{id}"
            );
        }
        assert!(
            server
                .store
                .agent(&t, "not-an-agent")
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// Written behind, a heartbeat is answered before it is stored, and a graceful stop writes
/// what is still pending: nothing answered 200 is lost by a clean shutdown.
#[tokio::test]
async fn a_graceful_stop_writes_the_heartbeats_still_behind() {
    for backend in backends() {
        let limits = Limits {
            heartbeat_flush: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut server = TestServer::start_with_on(&backend, limits).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.clone();
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "h", "public_key": public_key(1)}),
            )
            .await;
        let (status, body) = server
            .post("/api/agents/heartbeat", &token, &heartbeat(&id, Some(45)))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The minute has not passed: only the registration is stored.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = server.store.agent(&t, &id).await.unwrap().unwrap();
        assert_eq!(before.agent_version, None);
        assert_eq!(before.health, None);

        server.stop().await;
        let after = server.store.agent(&t, &id).await.unwrap().unwrap();
        assert_eq!(after.agent_version.as_deref(), Some("1.2.3"));
        assert!(after.last_seen.is_some());
        assert!(after.health.unwrap().contains("\"scans_completed\":3"));
    }
}
