//! The dashboard through a browser's eyes: login and sessions, the pages' content, escaping,
//! tenant isolation, and a fleet of 10,000 agents.
//!
//! The fleet list and the software search read the admin and inventory stores
//! (`list_agents_page`, `software_search`); their tests pass once those are in.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use muster_proto::DaemonReport;
use muster_server::admin::CreatedTenant;
use muster_server::token::{Token, TokenKind};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sqlx::Connection as _;
use uuid::Uuid;

use crate::support::{TestServer, backends, public_key};

const FIXTURE: &str = include_str!("fixtures/scan.json");

/// An answer as a browser sees it.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    fn set_cookie(&self) -> Option<&str> {
        self.headers.get(SET_COOKIE).and_then(|v| v.to_str().ok())
    }

    /// The logout form's token on a logged-in page.
    fn form_token(&self) -> String {
        let marker = "name=\"form_token\" value=\"";
        let start = self.body.find(marker).expect("a logout form") + marker.len();
        self.body[start..start + 64].to_owned()
    }

    fn assert_contains(&self, text: &str) {
        assert!(self.body.contains(text), "{text:?} not in:\n{}", self.body);
    }

    fn assert_lacks(&self, text: &str) {
        assert!(!self.body.contains(text), "{text:?} in:\n{}", self.body);
    }
}

/// A client that does not follow redirects and keeps no cookies: each test says which cookie
/// it sends.
pub fn browser() -> reqwest::Client {
    let _ = crate::support::client();
    reqwest::Client::builder()
        .tls_certs_only(Vec::new())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn read(request: reqwest::RequestBuilder) -> Page {
    let response = request.send().await.unwrap();
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn get(server: &TestServer, path: &str, cookie: Option<&str>) -> Page {
    let mut request = browser().get(server.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    read(request).await
}

async fn post_form(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Page {
    let body = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = browser()
        .post(server.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request).await
}

pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in with `token`; returns the `Cookie` header value that carries the session.
pub async fn login(server: &TestServer, token: &str) -> String {
    let page = post_form(server, "/login", None, &[("token", token)], &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), Some("/"));
    let cookie = page.set_cookie().expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// Runs SQL on the server's database (setting up what no API does yet, and bulk data).
pub async fn sql(server: &TestServer, statement: String) {
    let url = &server.database_url;
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

/// Registers an agent called `hostname`; returns its id and token.
async fn agent(
    server: &TestServer,
    tenant: &CreatedTenant,
    hostname: &str,
    seed: u8,
) -> (String, String) {
    server
        .register(
            tenant,
            json!({"hostname": hostname, "machine_id": format!("m-{seed}"),
                   "public_key": public_key(seed), "os_name": "Debian GNU/Linux",
                   "os_version": "12", "arch": "x86_64", "platform": "linux"}),
        )
        .await
}

/// The fixture scan, as `agent_id`'s report taken now.
fn scan_report(agent_id: &str) -> Value {
    let mut report: DaemonReport = serde_json::from_str(FIXTURE).unwrap();
    let now = Timestamp::now();
    report.report_id = Uuid::now_v7();
    report.agent_id = Some(agent_id.to_owned());
    report.datetime = now;
    for worker in &mut report.worker_reports {
        worker.datetime = now;
        for function in &mut worker.function_reports {
            function.datetime = now;
        }
    }
    serde_json::to_value(report).unwrap()
}

/// Posts the fixture scan and a few hours of telemetry for the agent.
async fn report_scan(server: &TestServer, agent_id: &str, token: &str) {
    let (status, answer) = server
        .post("/api/system/report", token, &scan_report(agent_id))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let now = Timestamp::now().as_second();
    let samples: Vec<Value> = (1..=12)
        .map(|i| {
            let at = Timestamp::from_second(now - i * 600).unwrap();
            json!({"datetime": at, "metrics": crate::api::metrics(10.0 + i as f64)})
        })
        .collect();
    let body = json!({"report_id": Uuid::now_v7(), "agent_id": agent_id, "samples": samples});
    let (status, answer) = server.post("/api/metrics/report", token, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn login_opens_a_session_in_a_strict_http_only_cookie() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;

        // Logged out, every page leads to the login page.
        for path in ["/", "/software", "/agents/x"] {
            let page = get(&server, path, None).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(page.location(), Some("/login"), "{path}");
        }
        let page = get(&server, "/login", None).await;
        assert_eq!(page.status, StatusCode::OK);
        page.assert_contains("<form method=\"post\" action=\"/login\">");
        assert_eq!(
            page.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .split(';')
                .next(),
            Some("default-src 'none'")
        );
        assert_eq!(page.headers["cache-control"], "no-store");

        // Wrong tokens: the form again, 401, no cookie.
        let unknown = Token::generate(TokenKind::Admin);
        for wrong in [
            "nonsense",
            "",
            unknown.expose(),
            tenant.enrol_token.expose(),
        ] {
            let page = post_form(&server, "/login", None, &[("token", wrong)], &[]).await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{wrong}");
            page.assert_contains("not accepted");
            page.assert_contains("action=\"/login\"");
            assert_eq!(page.set_cookie(), None);
        }

        let page = post_form(
            &server,
            "/login",
            None,
            &[("token", tenant.admin_token.expose())],
            &[],
        )
        .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.set_cookie().unwrap();
        let attributes: Vec<&str> = cookie.split("; ").collect();
        assert!(attributes[0].starts_with("muster_session="));
        assert_eq!(attributes[0].len(), "muster_session=".len() + 43);
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(attributes.contains(&flag), "{flag} in {cookie}");
        }
        assert!(!attributes.contains(&"Secure"), "{cookie}");
        let cookie = attributes[0].to_owned();

        // The session lasts across requests, and the login page sends its holder home.
        for _ in 0..2 {
            let page = get(&server, "/software", Some(&cookie)).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            page.assert_contains("Software across the fleet");
        }
        let page = get(&server, "/login", Some(&cookie)).await;
        assert_eq!(page.location(), Some("/"));

        // Behind a TLS-terminating proxy the cookie is Secure.
        let page = post_form(
            &server,
            "/login",
            None,
            &[("token", tenant.admin_token.expose())],
            &[("x-forwarded-proto", "https")],
        )
        .await;
        assert!(page.set_cookie().unwrap().ends_with("; Secure"));

        // A cookie naming no session is forgotten on the way to the login page.
        let page = get(
            &server,
            "/",
            Some(&format!("muster_session={}", "A".repeat(43))),
        )
        .await;
        assert_eq!(page.location(), Some("/login"));
        assert!(page.set_cookie().unwrap().contains("Max-Age=0"));
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_needs_the_form_token() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, "/software", Some(&cookie)).await;
        let form_token = page.form_token();

        // A followed link, no form token, or another site: the session stays.
        let page = get(&server, "/logout", Some(&cookie)).await;
        assert_eq!(page.location(), Some("/"));
        let page = post_form(&server, "/logout", Some(&cookie), &[], &[]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        page.assert_contains("<h1>403");
        let page = post_form(
            &server,
            "/logout",
            Some(&cookie),
            &[("form_token", &form_token)],
            &[("origin", "https://evil.example")],
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_eq!(
            get(&server, "/software", Some(&cookie)).await.status,
            StatusCode::OK
        );

        let page = post_form(
            &server,
            "/logout",
            Some(&cookie),
            &[("form_token", &form_token)],
            &[("origin", &server.base)],
        )
        .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location(), Some("/login"));
        assert!(page.set_cookie().unwrap().contains("Max-Age=0"));
        let page = get(&server, "/software", Some(&cookie)).await;
        assert_eq!(page.location(), Some("/login"));
    }
}

#[tokio::test]
async fn cross_site_and_oversized_logins_are_refused() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let token = tenant.admin_token.expose();
        let page = post_form(
            &server,
            "/login",
            None,
            &[("token", token)],
            &[("origin", "https://evil.example")],
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_eq!(page.set_cookie(), None);
        let page = post_form(
            &server,
            "/login",
            None,
            &[("token", token)],
            &[("referer", &format!("{}/login", server.base))],
        )
        .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);

        let big = "x".repeat(100_000);
        let page = post_form(&server, "/login", None, &[("token", &big)], &[]).await;
        assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
        page.assert_contains("<h1>413");
        let page = read(
            browser()
                .post(server.url("/login"))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_eq!(page.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        page.assert_contains("<!doctype html>");
    }
}

#[tokio::test]
async fn revoking_the_admin_token_ends_its_sessions() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        assert_eq!(
            get(&server, "/software", Some(&cookie)).await.status,
            StatusCode::OK
        );
        sql(
            &server,
            format!(
                "UPDATE tokens SET revoked_at = 1 WHERE hash = '{}'",
                tenant.admin_token.hash()
            ),
        )
        .await;
        let page = get(&server, "/software", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location(), Some("/login"));
        let page = post_form(
            &server,
            "/login",
            None,
            &[("token", tenant.admin_token.expose())],
            &[],
        )
        .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn the_agent_page_shows_the_inventory() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = agent(&server, &tenant, "vm", 1).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;

        let page = get(&server, &format!("/agents/{id}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains("No inventory has been received");
        page.assert_contains("No telemetry in the last 24 hours.");

        report_scan(&server, &id, &token).await;
        let page = get(&server, &format!("/agents/{id}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains("<title>vm · Muster</title>");
        page.assert_contains("<dt>Kernel</dt><dd>6.18.44-fc-v657</dd>");
        page.assert_contains("<dt>Virtualization</dt><dd>kvm docker</dd>");
        page.assert_contains("Intel(R) Xeon(R) Processor");
        page.assert_contains("<td>vda</td>");
        page.assert_contains("<td>/</td>");
        page.assert_contains("<meter min=\"0\" max=\"100\"");
        page.assert_contains("<code>192.0.2.2/24</code>");
        page.assert_contains("<td>eth0</td>");
        page.assert_contains("<td>adduser</td>");
        page.assert_contains("<td>ssh.service</td>");
        page.assert_contains("<span class=\"badge bad\">failed (failed)</span>");
        page.assert_contains("<td>process_api</td>");
        page.assert_contains("<code>dmi</code> unavailable");
        page.assert_contains("<polyline class=\"series cpu\"");
        page.assert_contains("13 samples");
        // 60 packages, 50 a page.
        page.assert_contains("1–50 of 60");
        page.assert_contains(&format!("href=\"/agents/{id}?pkg_page=2\""));

        let page = get(
            &server,
            &format!("/agents/{id}?pkg_page=2&procs=memory"),
            Some(&cookie),
        )
        .await;
        page.assert_contains("51–60 of 60");
        page.assert_contains("<td>openssl</td>");
        page.assert_contains("<code>3.0.19-1~deb12u2</code>");
        page.assert_contains(&format!("href=\"/agents/{id}?procs=memory\""));
        page.assert_contains("<strong>memory</strong>");
        let page = get(&server, &format!("/agents/{id}?pkg=SSL"), Some(&cookie)).await;
        page.assert_contains("<td>openssl</td>");
        page.assert_contains("<td>libssl3</td>");
        page.assert_lacks("<td>adduser</td>");

        // Bad input is a 400 page, an unknown agent a 404 page.
        for path in [
            format!("/agents/{id}?procs=everything"),
            format!("/agents/{id}?pkg_page=0"),
            format!("/agents/{id}?pkg={}", "x".repeat(300)),
        ] {
            let page = get(&server, &path, Some(&cookie)).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
            page.assert_contains("<h1>400");
        }
        for path in ["/agents/nope", "/agents/%3Cscript%3E", "/agents/%FF"] {
            let page = get(&server, path, Some(&cookie)).await;
            assert!(page.status.is_client_error(), "{path}: {}", page.status);
            page.assert_contains("<!doctype html>");
            page.assert_lacks("<script>");
        }
    }
}

#[tokio::test]
async fn seed_reports_are_shown_as_reported() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(&tenant, json!({"hostname": "old-1", "machine_id": "m-9"}))
            .await;
        let body = json!({
            "hostname": "old-1", "platform": "Linux-5.10", "agent_id": id,
            "cpu_info": {"cores": 4, "model": "Xeon E5"},
            "memory_total": 8_000_000_000u64,
            "installed_software": [{"name": "nginx", "version": "1.18.0"}],
            "system_metrics": {"cpu_usage": 12.5, "memory_usage": 40.0, "disk_usage": 55.0}
        });
        let (status, answer) = server.post("/api/system/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, &format!("/agents/{id}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains("Reported <code>cpu_info</code>");
        page.assert_contains("<td>Xeon E5</td>");
        page.assert_contains("<td>nginx</td>");
        page.assert_contains("1 sample<");
    }
}

#[tokio::test]
async fn agent_supplied_text_is_escaped() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let hostile = "<script>alert(1)</script>";
        let (id, token) = server
            .register(&tenant, json!({"hostname": hostile, "machine_id": "m-1"}))
            .await;
        let body = json!({
            "hostname": hostile, "agent_id": id,
            "installed_software": [{"name": "<img src=x onerror=alert(2)>", "version": "\"><b>"}],
        });
        let (status, answer) = server.post("/api/system/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, &format!("/agents/{id}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_lacks("<script>");
        page.assert_lacks("<img");
        page.assert_lacks("\"><b>");
        page.assert_contains("&#60;script&#62;alert(1)&#60;/script&#62;");
        page.assert_contains("&#60;img src=x onerror=alert(2)&#62;");
        // A search for the hostile text comes back escaped in the form.
        let page = get(
            &server,
            &format!("/agents/{id}?pkg=%22%3E%3Cscript%3E"),
            Some(&cookie),
        )
        .await;
        page.assert_lacks("<script>");
        page.assert_contains("value=\"&#34;&#62;&#60;script&#62;\"");
        // The fleet list (admin store) shows the hostname escaped too.
        let page = get(&server, "/", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_lacks("<script>");
    }
}

#[tokio::test]
async fn a_session_sees_only_its_own_tenant() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("a").await;
        let b = server.tenant("b").await;
        let (b_agent, b_token) = agent(&server, &b, "b-secret-host", 2).await;
        report_scan(&server, &b_agent, &b_token).await;
        let a_cookie = login(&server, a.admin_token.expose()).await;
        let b_cookie = login(&server, b.admin_token.expose()).await;

        let page = get(&server, &format!("/agents/{b_agent}"), Some(&a_cookie)).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        page.assert_lacks("b-secret-host");
        page.assert_contains("<h1>404");
        let page = get(&server, &format!("/agents/{b_agent}"), Some(&b_cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        page.assert_contains("b-secret-host");

        for path in ["/", "/software?name=openssl"] {
            let page = get(&server, path, Some(&a_cookie)).await;
            assert_eq!(page.status, StatusCode::OK, "{path}");
            page.assert_lacks("b-secret-host");
        }
    }
}

#[tokio::test]
async fn bad_fleet_parameters_are_400_pages() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        for path in [
            "/?page=0",
            "/?page=-3",
            "/?page=999999999999",
            "/?online=maybe",
            "/?q=%00",
            "/software?name=openssl&page=x",
        ] {
            let page = get(&server, path, Some(&cookie)).await;
            assert_eq!(
                page.status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                page.body
            );
            page.assert_contains("<h1>400");
        }
        let page = get(&server, "/static/muster.css", None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/css")
        );
    }
}

#[tokio::test]
async fn the_fleet_summary_counts_hosts_over_thresholds() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = agent(&server, &tenant, "busy", 1).await;
        agent(&server, &tenant, "idle", 2).await;
        server
            .register(&tenant, json!({"hostname": "old-1", "platform": "linux"}))
            .await;
        // The scan's own sample, taken now, has CPU at 96 %: the latest figure.
        report_scan(&server, &id, &token).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, "/", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains("<span class=\"figure\">3</span><span class=\"label\">agents</span>");
        page.assert_contains("<span class=\"figure warn\">1</span>");
        page.assert_contains("CPU &gt; 80 %: 1 · memory &gt; 80 %: 0 · disk &gt; 90 %: 0");
        page.assert_contains("<a href=\"/?os=Debian%20GNU%2FLinux\">Debian GNU/Linux</a> <span class=\"muted\">2</span>");
        page.assert_contains("<a href=\"/?os=linux\">linux</a> <span class=\"muted\">1</span>");
    }
}

// ---- these need the admin store's `list_agents_page` ----

#[tokio::test]
async fn the_fleet_list_filters_and_paginates() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let mut first = None;
        for i in 0..55u8 {
            let (id, token) = agent(&server, &tenant, &format!("web-{i:02}"), i).await;
            first.get_or_insert((id, token));
        }
        let (id, token) = first.unwrap();
        report_scan(&server, &id, &token).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;

        let page = get(&server, "/", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_lacks("unavailable");
        page.assert_contains("1–50 of 55");
        page.assert_contains("href=\"/?page=2\"");
        page.assert_contains(&format!("<a href=\"/agents/{id}\">web-00</a>"));
        page.assert_contains("<span class=\"figure\">55</span><span class=\"label\">agents</span>");
        page.assert_contains("Debian GNU/Linux 12");
        page.assert_lacks(">web-50<");
        // The scanned host's latest CPU figure (96 %) is over its threshold.
        page.assert_contains("<span class=\"figure warn\">1</span>");
        page.assert_contains("CPU &gt; 80 %: 1");

        let page = get(&server, "/?page=2", Some(&cookie)).await;
        page.assert_contains("51–55 of 55");
        page.assert_contains("href=\"/\"");
        page.assert_contains(">web-54<");

        let page = get(&server, "/?q=web-1*&online=online", Some(&cookie)).await;
        page.assert_contains("1–10 of 10");
        page.assert_lacks(">web-20<");
        let page = get(&server, "/?os=windows", Some(&cookie)).await;
        page.assert_contains("No agents match.");
    }
}

// ---- this needs the inventory store's `software_search` ----

#[tokio::test]
async fn the_software_search_finds_hosts() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = agent(&server, &tenant, "db-1", 1).await;
        report_scan(&server, &id, &token).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;

        let page = get(&server, "/software", Some(&cookie)).await;
        page.assert_contains("Name a package");
        let page = get(&server, "/software?name=openssl", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_lacks("unavailable");
        page.assert_contains(&format!("<a href=\"/agents/{id}\">db-1</a>"));
        page.assert_contains("<code>3.0.19-1~deb12u2</code>");
        let page = get(&server, "/software?name=openssl&below=3.0.7", Some(&cookie)).await;
        page.assert_contains("0 hosts");
        let page = get(&server, "/software?name=openssl&below=3.1", Some(&cookie)).await;
        page.assert_contains("1 host with");
    }
}

// ---- scale ----

/// 10,000 agents, each with a heartbeat and a telemetry sample; one with a full inventory and
/// a day of samples. Times the fleet page and the agent page (printed; run with
/// `--nocapture` to see them) and holds them to a bound loose enough for a debug build on a
/// busy machine.
#[tokio::test]
async fn pages_stay_fast_at_ten_thousand_agents() {
    const AGENTS: usize = 10_000;
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = agent(&server, &tenant, "vm", 1).await;
        report_scan(&server, &id, &token).await;
        let now = Timestamp::now().as_second();
        let tenant_id = &tenant.tenant.id;
        for chunk in (0..AGENTS).collect::<Vec<_>>().chunks(1000) {
            let mut agents = Vec::new();
            let mut reports = Vec::new();
            let mut metrics = Vec::new();
            for &i in chunk {
                let agent_id = Uuid::now_v7();
                let report_id = Uuid::now_v7();
                let os = ["Debian GNU/Linux", "Ubuntu", "Rocky Linux", "Windows"][i % 4];
                let seen = now - (i as i64 % 400);
                let (cpu, memory, disk) = (i % 100, (i * 7) % 100, (i * 13) % 100);
                agents.push(format!(
                    "('{agent_id}', '{tenant_id}', 'host:h{i}', 'host-{i:05}', 'linux', '{os}', \
                     '1', 'x86_64', {now}, {seen}, {cpu}, {memory}, {disk}, {seen})"
                ));
                reports.push(format!(
                    "('{report_id}', '{tenant_id}', '{agent_id}', 'metrics', {seen})"
                ));
                metrics.push(format!(
                    "('{tenant_id}', '{agent_id}', '{report_id}', {seen}, {}, {}, {}, '{{}}')",
                    i % 100,
                    (i * 7) % 100,
                    (i * 13) % 100
                ));
            }
            sql(
                &server,
                format!(
                    "INSERT INTO agents (id, tenant_id, identity, hostname, platform, os_name, \
                     os_version, arch, created_at, last_seen, cpu_usage, memory_usage, \
                     disk_usage, metrics_at) VALUES {}; \
                     INSERT INTO reports (report_id, tenant_id, agent_id, kind, received_at) \
                     VALUES {}; \
                     INSERT INTO metrics (tenant_id, agent_id, report_id, sampled_at, cpu_usage, \
                     memory_usage, disk_usage, data) VALUES {};",
                    agents.join(", "),
                    reports.join(", "),
                    metrics.join(", ")
                ),
            )
            .await;
        }
        // A day of samples for the agent whose page is timed.
        let samples: Vec<Value> = (1..=143)
            .map(|i| {
                let at = Timestamp::from_second(now - i * 600).unwrap();
                json!({"datetime": at, "metrics": crate::api::metrics((i % 100) as f64)})
            })
            .collect();
        let body = json!({"report_id": Uuid::now_v7(), "agent_id": id, "samples": samples});
        let (status, answer) = server.post("/api/metrics/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        if server.database_url.starts_with("postgres") {
            sql(&server, "ANALYZE".to_owned()).await;
        }

        let cookie = login(&server, tenant.admin_token.expose()).await;
        let backend_name = if server.database_url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        for (path, check) in [
            ("/".to_owned(), "agents</span>"),
            ("/?page=150".to_owned(), "agents</span>"),
            ("/?q=host-09*&online=online".to_owned(), "agents</span>"),
            (format!("/agents/{id}"), "156 samples"),
            (format!("/agents/{id}?pkg=lib"), "156 samples"),
        ] {
            let mut times = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                let page = get(&server, &path, Some(&cookie)).await;
                times.push(started.elapsed());
                assert_eq!(page.status, StatusCode::OK, "{path}");
                page.assert_contains(check);
            }
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "dashboard at {AGENTS} agents, {backend_name}: GET {path}: median {:.1} ms, max {:.1} ms",
                median.as_secs_f64() * 1000.0,
                times[times.len() - 1].as_secs_f64() * 1000.0
            );
            assert!(median < Duration::from_secs(2), "{path}: {median:?}");
        }
    }
}

/// The agent page's inventory and telemetry sections, rendered from the fixture scan, with
/// what changes from run to run (ids, times, chart coordinates) redacted. The header, the
/// packages and the change history are left out: they come from the admin and inventory
/// stores, which the other tests cover.
#[tokio::test]
async fn the_agent_page_renders_as_before() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = agent(&server, &tenant, "vm", 1).await;
        report_scan(&server, &id, &token).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, &format!("/agents/{id}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let between = |from: &str, to: &str| {
            let start = page.body.find(from).expect(from);
            let end = start + page.body[start..].find(to).expect(to);
            page.body[start..end].to_owned()
        };
        let sections = [
            between(
                "<div class=\"columns\">",
                "<section class=\"card\" id=\"packages\">",
            ),
            between(
                "<section class=\"card\" id=\"processes\">",
                "<section class=\"card\">\n  <h2>Inventory changes</h2>",
            ),
        ];
        let redacted: Vec<String> = sections
            .join("")
            .replace(&id, "[agent-id]")
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                if [
                    "<dt>Registered</dt>",
                    "<dt>Last seen</dt>",
                    "Inventory received",
                ]
                .iter()
                .any(|marker| line.contains(marker))
                {
                    let keep = line.find("<dd>").or(line.find("Inventory")).unwrap();
                    format!("{}[time]", &line[..keep])
                } else if let Some(start) = line.find("points=\"") {
                    format!("{}points=\"[points]\"/>", &line[..start])
                } else {
                    line.to_owned()
                }
            })
            .collect();
        insta::assert_snapshot!("agent_page", redacted.join("\n"));
    }
}

/// From an agent's page a command is sent (form token, same origin), its page shows each
/// agent's state and output, and the cancel button cancels it; the list form targets a filter.
#[tokio::test]
async fn commands_are_sent_shown_and_cancelled_from_the_dashboard() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (web, web_token) = agent(&server, &tenant, "web-1", 1).await;
        let (db, _) = agent(&server, &tenant, "db-1", 2).await;
        let cookie = login(&server, tenant.admin_token.expose()).await;
        let page = get(&server, &format!("/agents/{web}"), Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains(&format!(
            "<input type=\"hidden\" name=\"agent_id\" value=\"{web}\">"
        ));
        let form_token = page.form_token();
        let origin = [("origin", server.base.as_str())];
        let fields = |token: &str| {
            vec![
                ("form_token", token.to_owned()),
                ("agent_id", web.clone()),
                ("kind", "script".to_owned()),
                ("command", "echo <hi>\r\nuname".to_owned()),
                ("interpreter", "sh".to_owned()),
                ("priority", "2".to_owned()),
                ("timeout_s", "30".to_owned()),
                ("locks", "apt, tenant:reboot".to_owned()),
            ]
        };
        let post = |fields: Vec<(&'static str, String)>,
                    headers: &'static [(&'static str, &'static str)]| {
            let server = &server;
            let cookie = cookie.clone();
            async move {
                let refs: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                post_form(server, "/commands", Some(&cookie), &refs, headers).await
            }
        };
        // A stale token, or another site, is refused; nothing is created.
        let refused = post(fields(&"0".repeat(64)), &[]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let refused = post(fields(&form_token), &[("origin", "https://evil.example")]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(
            server
                .get("/api/admin/commands", tenant.admin_token.expose())
                .await
                .1["total"],
            0
        );

        let refs: Vec<(&str, String)> = fields(&form_token);
        let refs: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let created = post_form(&server, "/commands", Some(&cookie), &refs, &origin).await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
        let location = created.location().unwrap().to_owned();
        let id: i64 = location.trim_start_matches("/commands/").parse().unwrap();
        let command = server
            .get(
                &location.replace("/commands", "/api/admin/commands"),
                tenant.admin_token.expose(),
            )
            .await
            .1;
        assert_eq!(command["command"], "echo <hi>\nuname");
        assert_eq!(command["parameters"], json!({"interpreter": "sh"}));
        assert_eq!(command["priority"], 2);
        assert_eq!(command["locks"], json!(["apt", "tenant:reboot"]));
        assert_eq!(command["target_count"], 1);

        // The agent runs it; its page shows the output, escaped.
        let (_, leased) = server.get("/api/commands/pending", &web_token).await;
        assert_eq!(leased["commands"][0]["id"], id);
        for step in [
            json!({"command_id": id, "status": "running", "started_at": "2026-01-01T00:00:00Z"}),
            json!({"command_id": id, "status": "failed", "exit_code": 3, "stdout": "<b>out</b>",
                "stderr": "bad", "stderr_truncated": true, "finished_at": "2026-01-01T00:00:04Z"}),
        ] {
            let (code, _) = server.post("/api/commands/status", &web_token, &step).await;
            assert_eq!(code, StatusCode::NO_CONTENT);
        }
        let page = get(&server, &location, Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.assert_contains("web-1");
        page.assert_contains("&#60;b&#62;out&#60;/b&#62;");
        page.assert_lacks("<b>out</b>");
        page.assert_contains("echo &#60;hi&#62;");
        page.assert_contains(">failed</span>");
        page.assert_contains("2026-01-01 00:00:04 UTC");
        page.assert_contains("4 s");
        page.assert_contains("stderr (truncated");
        // Ended everywhere: no cancel button.
        page.assert_lacks("/cancel");

        // The list's form: every `db-*` agent; then cancelled before delivery.
        let list = get(&server, "/commands", Some(&cookie)).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.assert_contains(&format!("href=\"/commands/{id}\""));
        list.assert_contains("1 failed");
        let created = post_form(
            &server,
            "/commands",
            Some(&cookie),
            &[
                ("form_token", &form_token),
                ("hostname", "db-*"),
                ("kind", "builtin"),
                ("command", "scan_now"),
            ],
            &origin,
        )
        .await;
        assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
        let second = created.location().unwrap().to_owned();
        let page = get(&server, &second, Some(&cookie)).await;
        page.assert_contains("db-1");
        page.assert_contains(&format!("action=\"{second}/cancel\""));
        let cancel_path = format!("{second}/cancel");
        let refused = post_form(
            &server,
            &cancel_path,
            Some(&cookie),
            &[("form_token", "x")],
            &origin,
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let cancelled = post_form(
            &server,
            &cancel_path,
            Some(&cookie),
            &[("form_token", &form_token)],
            &origin,
        )
        .await;
        assert_eq!(
            cancelled.status,
            StatusCode::SEE_OTHER,
            "{}",
            cancelled.body
        );
        let page = get(&server, &second, Some(&cookie)).await;
        page.assert_contains(">cancelled</span>");
        page.assert_lacks("/cancel\"");
        let listed = get(&server, &format!("/commands?agent_id={db}"), Some(&cookie)).await;
        listed.assert_contains("1 cancelled");
        listed.assert_lacks(&format!("href=\"/commands/{id}\""));

        // A bad form is a 422 page, and another tenant's command is not found.
        let bad = post_form(
            &server,
            "/commands",
            Some(&cookie),
            &[
                ("form_token", &form_token),
                ("agent_id", &web),
                ("kind", "shell"),
                ("command", "x"),
            ],
            &origin,
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        let other = server.tenant("other").await;
        let other_cookie = login(&server, other.admin_token.expose()).await;
        let page = get(&server, &location, Some(&other_cookie)).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
    }
}
