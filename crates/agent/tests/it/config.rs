//! `muster-agent config check`: the effective configuration with sources, secrets redacted,
//! exit code 78 on a bad configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOKEN: &str = "tok-5b0e2d71-must-never-be-printed";

/// A directory holding `agent.toml` (and maybe `config.env`).
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), toml).unwrap();
        Dir { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    fn env_file(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("config.env");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `muster-agent config check --config <agent.toml> <args>` with exactly `env` as its
    /// environment, so nothing from the test runner's environment leaks in.
    fn check(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .args(["config", "check", "--config"])
            .arg(self.config())
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("muster-agent runs")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The line of `key` in the text output: `(value, source)`.
fn line<'a>(text: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{text}"));
    let rest = &line[key.len() + 3..];
    let open = rest.rfind("  (").expect("a source in parentheses");
    (
        rest[..open].trim_end(),
        rest[open + 3..].trim_end_matches(')'),
    )
}

fn assert_no_token(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(TOKEN), "the token was printed:\n{text}");
    }
}

#[test]
fn check_prints_every_value_with_its_source_and_redacts_the_token() {
    let dir = Dir::new(&format!(
        "[agent]\nheartbeat_interval = 45\n\n[api]\nauth_token = \"{TOKEN}\"\n"
    ));
    let env_file = dir.env_file("TENANT_ID=acme\nTELEMETRY_INTERVAL=5  # minutes\n");
    let state = dir.dir.path().join("state");
    let out = dir.check(
        &["--state-dir", state.to_str().unwrap()],
        &[("MUSTER_API_BASE_URL", "https://muster.example.com/api/")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_token(&out);
    let text = stdout(&out);
    let file = format!("file {}", dir.config().display());
    assert_eq!(
        line(&text, "agent.heartbeat_interval"),
        ("45", file.as_str())
    );
    assert_eq!(line(&text, "api.auth_token"), ("[redacted]", file.as_str()));
    assert_eq!(
        line(&text, "api.tenant_id"),
        (
            "\"acme\"",
            format!("config.env {} TENANT_ID", env_file.display()).as_str()
        )
    );
    assert_eq!(
        line(&text, "agent.collection_interval"),
        (
            "300",
            format!("config.env {} TELEMETRY_INTERVAL", env_file.display()).as_str()
        )
    );
    assert_eq!(
        line(&text, "api.base_url"),
        (
            "\"https://muster.example.com/api\"",
            "env MUSTER_API_BASE_URL"
        )
    );
    assert_eq!(
        line(&text, "agent.state_dir"),
        (
            format!("{:?}", state.display().to_string()).as_str(),
            "flag --state-dir"
        )
    );
    assert_eq!(line(&text, "agent.splay"), ("30", "default"));
    assert_eq!(line(&text, "security.ca_file"), ("(not set)", "default"));
    // Every key, once: 35 of them, after the two comment lines naming the files.
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    assert_eq!(keys.len(), 35, "{text}");
    assert!(keys.iter().all(|k| k.contains('.')));
    assert!(text.starts_with(&format!("# file: {}\n", dir.config().display())));
    assert!(text.contains(&format!("# config.env: {}\n", env_file.display())));
}

#[test]
fn check_json_is_one_object_of_values_and_sources() {
    let dir = Dir::new(&format!("[api]\nauth_token = \"{TOKEN}\"\ntimeout = 12\n"));
    let out = dir.check(&["--json"], &[("API_BASE_URL", "http://127.0.0.1:9/api")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_token(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), 35);
    assert!(object.values().all(|v| v["source"].is_string()));
    assert_eq!(json["api.auth_token"]["value"], "[redacted]");
    assert_eq!(json["api.timeout"]["value"], 12);
    assert_eq!(
        json["api.timeout"]["source"],
        format!("file {}", dir.config().display())
    );
    assert_eq!(json["api.base_url"]["value"], "http://127.0.0.1:9/api");
    assert_eq!(json["api.base_url"]["source"], "env API_BASE_URL");
    assert_eq!(
        json["security.allowed_command_types"]["value"],
        serde_json::json!(["builtin"])
    );
    assert_eq!(json["security.verify_ssl"]["value"], true);
    assert_eq!(json["monitoring.disk_threshold"]["value"], 90.0);
    assert_eq!(
        json["security.command_signing_key"]["value"],
        serde_json::Value::Null
    );
}

#[test]
fn a_bad_file_exits_78_naming_file_key_and_reason() {
    let dir = Dir::new("[agent]\nheartbeat_interval = -5\n");
    let out = dir.check(&[], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out),
        format!(
            "muster-agent: {}:2:22: [agent] heartbeat_interval: must be a positive number of \
             seconds, got -5\n",
            dir.config().display()
        )
    );
    assert_eq!(stdout(&out), "");

    let dir = Dir::new("[agent]\nheartbeat = 5\n");
    let out = dir.check(&["--json"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("agent.toml:2:1: [agent] heartbeat: unknown key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_syntax_error_exits_78_with_line_and_column_and_no_secret() {
    let dir = Dir::new(&format!(
        "[agent]\nsplay = 1\n[api]\nauth_token = \"{TOKEN}\n"
    ));
    let out = dir.check(&[], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert_no_token(&out);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("muster-agent: {}:4:", dir.config().display())),
        "{err}"
    );
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn a_missing_config_given_by_flag_exits_78() {
    let dir = Dir::new("");
    std::fs::remove_file(dir.config()).unwrap();
    let out = dir.check(&[], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out),
        format!(
            "muster-agent: {}: configuration file not found\n",
            dir.config().display()
        )
    );
}

#[test]
fn bad_env_and_flag_values_exit_78_naming_them() {
    let dir = Dir::new("");
    let out = dir.check(
        &[],
        &[("MUSTER_SCHEDULING_MAINTENANCE_WINDOW_START", "2am")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        stderr(&out),
        "muster-agent: environment variable MUSTER_SCHEDULING_MAINTENANCE_WINDOW_START: \
         [scheduling] maintenance_window_start: must be a time of day as HH:MM (24-hour, 00:00 \
         to 23:59), got \"2am\"\n"
    );
    let out = dir.check(&["--base-url", "muster.example.com"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).starts_with("muster-agent: flag --base-url: [api] base_url: must be an"),
        "{}",
        stderr(&out)
    );
    // A bad token given in the environment is refused without being echoed.
    let bad = format!("{TOKEN} with spaces");
    let out = dir.check(&[], &[("API_TOKEN", bad.as_str())]);
    assert_eq!(out.status.code(), Some(78));
    assert_no_token(&out);
    assert!(stderr(&out).contains("environment variable API_TOKEN: [api] auth_token:"));
}

#[test]
fn the_real_environment_beats_config_env() {
    let dir = Dir::new("[api]\ntenant_id = \"from-toml\"\n");
    dir.env_file(&format!(
        "TENANT_ID=from-config-env\nAPI_TOKEN='{TOKEN}'\nMUSTER_AGENT_SPLAY=4\n"
    ));
    let out = dir.check(
        &[],
        &[("TENANT_ID", "from-env"), ("MUSTER_AGENT_SPLAY", "9")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_token(&out);
    let text = stdout(&out);
    assert_eq!(
        line(&text, "api.tenant_id"),
        ("\"from-env\"", "env TENANT_ID")
    );
    assert_eq!(line(&text, "agent.splay"), ("9", "env MUSTER_AGENT_SPLAY"));
    // Where the environment says nothing, config.env still beats the file.
    let env_file = dir.dir.path().join("config.env");
    assert_eq!(
        line(&text, "api.auth_token"),
        (
            "[redacted]",
            format!("config.env {} API_TOKEN", env_file.display()).as_str()
        )
    );
}

#[test]
fn a_bad_config_env_exits_78_naming_its_line() {
    let dir = Dir::new("");
    let env_file = dir.env_file("TENANT_ID=acme\nAPI_TOKN=x\n");
    let out = dir.check(&[], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "muster-agent: {}:2: API_TOKN: unknown variable",
            env_file.display()
        )),
        "{err}"
    );
}

/// The example file in docs/CONFIG.md is a configuration the agent accepts.
#[test]
fn the_documented_example_file_is_valid() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIG.md"))
            .unwrap();
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("an example TOML block in docs/CONFIG.md");
    let dir = Dir::new(example);
    let out = dir.check(&["--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["api.base_url"]["value"],
        "https://muster.example.com/api"
    );
    assert_eq!(json["agent.collection_interval"]["value"], 600);
}
