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
