//! The signed form of a command: every field that decides what runs, where and when changes
//! it; nothing else does.

use muster_proto::api::{COMMAND_SIGNATURE_TAG, Command};

fn command() -> Command {
    serde_json::from_value(serde_json::json!({
        "id": 7,
        "type": "script",
        "command": "echo hi",
        "parameters": {"interpreter": "sh", "env": {"B": "2", "A": "1"}},
        "priority": 2,
        "scheduled_for": "2026-11-22T10:00:00Z",
        "timeout_s": 60,
        "maintenance_window": true,
        "locks": ["apt"],
        "expires_at": "2026-11-23T10:00:00Z",
    }))
    .unwrap()
}

#[test]
fn each_signed_field_changes_the_payload() {
    let base = command().signing_payload("agent-1");
    assert!(
        String::from_utf8(base.clone())
            .unwrap()
            .contains(COMMAND_SIGNATURE_TAG)
    );
    let later = "2026-11-22T10:00:01Z".parse().unwrap();
    type Change = Box<dyn Fn(&mut Command)>;
    let changes: Vec<(&str, Change)> = vec![
        ("id", Box::new(|c| c.id = 8)),
        ("type", Box::new(|c| c.kind = "exec".into())),
        ("command", Box::new(|c| c.command = "echo ho".into())),
        (
            "parameters",
            Box::new(|c| c.parameters["interpreter"] = "bash".into()),
        ),
        (
            "nested parameters",
            Box::new(|c| c.parameters["env"]["A"] = "3".into()),
        ),
        (
            "scheduled_for",
            Box::new(move |c| c.scheduled_for = Some(later)),
        ),
        ("no scheduled_for", Box::new(|c| c.scheduled_for = None)),
        ("expires_at", Box::new(move |c| c.expires_at = Some(later))),
        ("timeout_s", Box::new(|c| c.timeout_s = Some(61))),
        ("priority", Box::new(|c| c.priority = 1)),
        (
            "maintenance_window",
            Box::new(|c| c.maintenance_window = false),
        ),
        ("locks", Box::new(|c| c.locks.push("reboot".into()))),
        ("package_manager", Box::new(|c| c.package_manager = true)),
    ];
    for (field, change) in changes {
        let mut changed = command();
        change(&mut changed);
        assert_ne!(
            changed.signing_payload("agent-1"),
            base,
            "{field} is not signed"
        );
    }
    assert_ne!(
        command().signing_payload("agent-2"),
        base,
        "the target is not signed"
    );
}

#[test]
fn key_order_and_the_signature_do_not_change_the_payload() {
    let mut reordered = command();
    reordered.parameters =
        serde_json::from_str(r#"{"env": {"A": "1", "B": "2"}, "interpreter": "sh"}"#).unwrap();
    reordered.signature = Some("c2ln".into());
    assert_eq!(
        reordered.signing_payload("agent-1"),
        command().signing_payload("agent-1")
    );
}
