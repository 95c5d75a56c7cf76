//! The `muster-server` binary's admin commands.

use std::process::Command;

fn admin(database: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_muster-server"))
        .args(["admin", "--database-url", database])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tenant_create_prints_its_tokens_once_and_list_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    // A bare path works as the database url; its directory is created.
    let database = dir.path().join("data/muster.db");
    let database = database.to_str().unwrap();

    let out = admin(database, &["tenant", "create", "acme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["name"], "acme");
    assert!(
        created["enrolment_token"]
            .as_str()
            .unwrap()
            .starts_with("mst_enrol_")
    );
    assert!(
        created["admin_token"]
            .as_str()
            .unwrap()
            .starts_with("mst_admin_")
    );
    let tenant_id = created["tenant_id"].as_str().unwrap();

    let out = admin(database, &["tenant", "create", "acme"]);
    assert!(
        !out.status.success(),
        "a second tenant of the same name is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));

    let out = admin(database, &["tenant", "create", "globex"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("enrolment token:  mst_enrol_"), "{text}");

    let out = admin(database, &["tenant", "list", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "globex"]);
    assert_eq!(list[0]["tenant_id"], tenant_id);

    // Tokens are stored only as hashes.
    let db = std::fs::read(database).unwrap();
    let token = created["enrolment_token"].as_str().unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
}

/// The token the CLI printed, as the store finds it by its hash.
async fn stored(database: &str, token: &str) -> muster_server::store::TokenRecord {
    let store = muster_server::store::Store::open(database).await.unwrap();
    let hash = muster_server::token::Token::parse(token).unwrap().hash();
    let record = store.find_token(&hash).await.unwrap().unwrap();
    store.close().await;
    record
}

#[tokio::test]
async fn token_create_list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("muster.db");
    let database = database.to_str().unwrap();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let out = admin(database, &["tenant", "create", "acme", "--json"]);
    ok(&out);
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap();

    // By name, with an expiry.
    let out = admin(
        database,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--kind",
            "admin",
            "--name",
            "ci",
            "--expires-in",
            "30d",
            "--json",
        ],
    );
    ok(&out);
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("mst_admin_"));
    assert_eq!(created["name"], "ci");
    assert_eq!(created["tenant_id"], tenant_id);
    let record = stored(database, token).await;
    assert_eq!(record.tenant_id, tenant_id);
    let expires_in = record.expires_at.unwrap() - jiff::Timestamp::now().as_second();
    assert!((30 * 86_400 - 60..=30 * 86_400).contains(&expires_in));

    // By id, as text.
    let out = admin(
        database,
        &["token", "create", "--tenant", tenant_id, "--kind", "enrol"],
    );
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("token:     mst_enrol_"), "{text}");
    assert!(text.contains("expires:   never"), "{text}");

    let out = admin(database, &["token", "list", "--tenant", "acme", "--json"]);
    ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    assert!(!list.to_string().contains("mst_"));
    assert!(!list.to_string().contains(&record.hash));
    let id = created["id"].as_str().unwrap();

    let out = admin(database, &["token", "revoke", id, "--tenant", "acme"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked admin token"));
    assert!(stored(database, token).await.revoked_at.is_some());
    let out = admin(database, &["token", "list", "--tenant", "acme"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(line.contains("revoked") && line.ends_with("ci"), "{line}");

    // Refusals: an unknown tenant, another tenant's token, an agent token, a bad duration.
    let out = admin(database, &["tenant", "create", "globex"]);
    ok(&out);
    for args in [
        &["token", "list", "--tenant", "nobody"][..],
        &["token", "revoke", id, "--tenant", "globex"],
        &["token", "create", "--tenant", "acme", "--kind", "agent"],
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--kind",
            "admin",
            "--expires-in",
            "soon",
        ],
    ] {
        let out = admin(database, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

/// `config check` is the units' `ExecStartPre`: a valid file exits 0 and shows the effective
/// settings (never a database password), a bad one exits 78 naming the key, and so does
/// `serve` given the bad file.
#[test]
fn config_check_accepts_a_valid_file_and_refuses_a_bad_one_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("server.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = \"127.0.0.1:3999\"\n\
         database_url = \"postgres://muster:s3cret@127.0.0.1:1/muster\"\n\
         [limits]\nagent_requests_per_minute = 30\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["config", "check", "--config", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen = 127.0.0.1:3999"), "{stdout}");
    assert!(stdout.contains("30 requests per minute"), "{stdout}");
    assert!(stdout.contains("muster:***@"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    let out = run(&[
        "config",
        "check",
        "--quiet",
        "--config",
        good.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nagent_burst = 0\n").unwrap();
    for args in [
        vec!["config", "check", "--config", bad.to_str().unwrap()],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            bad.to_str().unwrap(),
        ],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains("agent_burst"), "{args:?}: {stderr}");
    }
    let out = run(&["config", "check", "--config", "/nonexistent/server.toml"]);
    assert_eq!(out.status.code(), Some(78));
}
