//! Whether a command may run at all: its signature (when a signing key is known), its expiry,
//! its type and its fields. A command that fails here is reported `rejected` (or `expired`)
//! and never queued.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use muster_proto::api::{Command, CommandState};
use ring::signature::{ED25519, UnparsedPublicKey};

/// The tenant's command-signing public key (ed25519, 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// From its base64 form (standard alphabet, padded), as configured or pinned.
    pub fn from_base64(text: &str) -> Result<SigningKey, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!("{} bytes, an ed25519 key has 32", bytes.len()));
        }
        Ok(SigningKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }

    /// Whether `signature` (base64) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = BASE64.decode(signature.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, &signature)
            .is_ok()
    }
}

/// Why a command is refused: the state to report and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub state: CommandState,
    pub reason: String,
}

impl Refusal {
    fn rejected(reason: impl Into<String>) -> Self {
        Refusal {
            state: CommandState::Rejected,
            reason: reason.into(),
        }
    }
}

/// What the agent checks a command against.
#[derive(Debug, Clone)]
pub struct Policy {
    pub agent_id: String,
    pub key: Option<SigningKey>,
    pub allowed_types: Vec<String>,
}

/// The actions a `builtin` may name.
pub const BUILTINS: &[&str] = &["scan_now", "telemetry_now", "reload_config", "collect_logs"];

impl Policy {
    /// `Ok` when `command` may be queued at `now`. The signature is checked first: the other
    /// fields mean nothing until it is known that the server sent them.
    pub fn check(&self, command: &Command, now: Timestamp) -> Result<(), Refusal> {
        if let Some(key) = &self.key {
            let Some(signature) = &command.signature else {
                return Err(Refusal::rejected("the command is not signed"));
            };
            if !key.verifies(&command.signing_payload(&self.agent_id), signature) {
                return Err(Refusal::rejected(
                    "the command's signature does not verify (tampered, or not for this agent)",
                ));
            }
        }
        if let Some(expires) = command.expires_at
            && expires <= now
        {
            return Err(Refusal {
                state: CommandState::Expired,
                reason: format!("expired at {expires}"),
            });
        }
        if !self.allowed_types.contains(&command.kind) {
            return Err(Refusal::rejected(format!(
                "command type {:?} is not allowed on this agent ([security] allowed_command_types)",
                command.kind
            )));
        }
        if !(1..=5).contains(&command.priority) {
            return Err(Refusal::rejected(format!(
                "priority {} is outside 1..5",
                command.priority
            )));
        }
        check_fields(command).map_err(Refusal::rejected)
    }
}

/// The parameters a command's type needs, well-formed.
fn check_fields(command: &Command) -> Result<(), String> {
    let p = &command.parameters;
    if !(p.is_null() || p.is_object()) {
        return Err("parameters must be an object".into());
    }
    if let Some(env) = p.get("env")
        && !env
            .as_object()
            .is_some_and(|m| m.values().all(serde_json::Value::is_string))
    {
        return Err("parameters.env must be an object of strings".into());
    }
    match command.kind.as_str() {
        "exec" => {
            if command.command.is_empty() {
                return Err("exec needs a program".into());
            }
            if let Some(args) = p.get("args")
                && !args
                    .as_array()
                    .is_some_and(|a| a.iter().all(serde_json::Value::is_string))
            {
                return Err("parameters.args must be an array of strings".into());
            }
            Ok(())
        }
        "script" => {
            let found = match p.get("interpreter") {
                None => super::exec::find_interpreter(None),
                Some(v) => v
                    .as_str()
                    .and_then(|i| super::exec::find_interpreter(Some(i))),
            };
            match found {
                Some(_) => Ok(()),
                None => Err(format!(
                    "parameters.interpreter must be one of {} on this platform",
                    super::exec::INTERPRETERS
                        .iter()
                        .map(|i| i.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        "builtin" => {
            if BUILTINS.contains(&command.command.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "unknown builtin {:?} (one of {})",
                    command.command,
                    BUILTINS.join(", ")
                ))
            }
        }
        other => Err(format!("unknown command type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    use serde_json::json;

    use super::*;

    type Change = Box<dyn Fn(&mut Command)>;

    pub(crate) fn key_pair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
    }

    fn command() -> Command {
        Command {
            id: 7,
            kind: "exec".into(),
            command: "/bin/true".into(),
            parameters: json!({"args": ["a"], "env": {"X": "1"}}),
            priority: 3,
            scheduled_for: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            timeout_s: Some(30),
            maintenance_window: false,
            locks: vec!["apt".into()],
            package_manager: false,
            expires_at: Some("2026-02-01T00:00:00Z".parse().unwrap()),
            signature: None,
        }
    }

    fn signed(pair: &Ed25519KeyPair, mut c: Command, agent: &str) -> Command {
        c.signature = Some(BASE64.encode(pair.sign(&c.signing_payload(agent)).as_ref()));
        c
    }

    fn policy(pair: &Ed25519KeyPair) -> Policy {
        Policy {
            agent_id: "agent-1".into(),
            key: Some(SigningKey::from_base64(&BASE64.encode(pair.public_key().as_ref())).unwrap()),
            allowed_types: vec!["exec".into(), "script".into(), "builtin".into()],
        }
    }

    fn now() -> Timestamp {
        "2026-01-15T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_signed_command_verifies_and_each_tampered_field_does_not() {
        let pair = key_pair();
        let policy = policy(&pair);
        let good = signed(&pair, command(), "agent-1");
        assert_eq!(policy.check(&good, now()), Ok(()));

        let tampers: Vec<(&str, Change)> = vec![
            ("id", Box::new(|c| c.id += 1)),
            ("type", Box::new(|c| c.kind = "script".into())),
            ("command", Box::new(|c| c.command = "/bin/false".into())),
            (
                "parameters",
                Box::new(|c| c.parameters["args"][0] = json!("b")),
            ),
            ("env", Box::new(|c| c.parameters["env"]["X"] = json!("2"))),
            ("priority", Box::new(|c| c.priority = 1)),
            ("scheduled_for", Box::new(|c| c.scheduled_for = None)),
            (
                "expires_at",
                Box::new(|c| c.expires_at = Some("2027-01-01T00:00:00Z".parse().unwrap())),
            ),
            ("timeout_s", Box::new(|c| c.timeout_s = Some(31))),
            (
                "maintenance_window",
                Box::new(|c| c.maintenance_window = true),
            ),
            ("locks", Box::new(|c| c.locks.push("tenant:reboot".into()))),
            ("package_manager", Box::new(|c| c.package_manager = true)),
        ];
        for (field, tamper) in tampers {
            let mut c = good.clone();
            tamper(&mut c);
            let refusal = policy.check(&c, now()).unwrap_err();
            assert_eq!(refusal.state, CommandState::Rejected, "{field}");
            assert!(
                refusal.reason.contains("does not verify"),
                "{field}: {refusal:?}"
            );
        }

        let mut garbled = good.clone();
        garbled.signature = Some("!!!".into());
        assert_eq!(
            policy.check(&garbled, now()).unwrap_err().state,
            CommandState::Rejected
        );
    }

    #[test]
    fn a_command_signed_for_another_agent_or_by_another_key_is_rejected() {
        let pair = key_pair();
        let policy = policy(&pair);
        let other_agent = signed(&pair, command(), "agent-2");
        assert!(
            policy
                .check(&other_agent, now())
                .unwrap_err()
                .reason
                .contains("does not verify")
        );
        let other_key = signed(&key_pair(), command(), "agent-1");
        assert!(policy.check(&other_key, now()).is_err());
    }

    #[test]
    fn with_a_key_an_unsigned_command_is_rejected_without_one_it_passes() {
        let pair = key_pair();
        let refusal = policy(&pair).check(&command(), now()).unwrap_err();
        assert_eq!(refusal.reason, "the command is not signed");
        let open = Policy {
            key: None,
            ..policy(&pair)
        };
        assert_eq!(open.check(&command(), now()), Ok(()));
    }

    #[test]
    fn an_expired_command_is_expired() {
        let pair = key_pair();
        let c = signed(&pair, command(), "agent-1");
        let later = "2026-02-01T00:00:00Z".parse().unwrap();
        let refusal = policy(&pair).check(&c, later).unwrap_err();
        assert_eq!(refusal.state, CommandState::Expired);
    }

    #[test]
    fn only_allowed_types_and_well_formed_fields_pass() {
        let mut p = Policy {
            agent_id: "agent-1".into(),
            key: None,
            allowed_types: vec!["builtin".into()],
        };
        let refusal = p.check(&command(), now()).unwrap_err();
        assert!(refusal.reason.contains("not allowed"), "{refusal:?}");
        p.allowed_types = vec!["exec".into(), "script".into(), "builtin".into()];
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.priority = 0), "priority"),
            (Box::new(|c| c.priority = 6), "priority"),
            (Box::new(|c| c.parameters = json!({"args": "x"})), "args"),
            (Box::new(|c| c.parameters = json!({"env": {"A": 1}})), "env"),
            (
                Box::new(|c| {
                    c.kind = "script".into();
                    c.parameters = json!({"interpreter": "perl"})
                }),
                "interpreter",
            ),
            (
                Box::new(|c| {
                    c.kind = "builtin".into();
                    c.command = "format_disk".into()
                }),
                "builtin",
            ),
            (Box::new(|c| c.kind = "shell".into()), "not allowed"),
        ];
        for (change, word) in cases {
            let mut c = command();
            change(&mut c);
            let refusal = p.check(&c, now()).unwrap_err();
            assert!(refusal.reason.contains(word), "{word}: {refusal:?}");
        }
    }

    /// Each platform takes its own interpreters and refuses the other's.
    #[test]
    fn scripts_name_an_interpreter_of_this_platform() {
        let p = Policy {
            agent_id: "agent-1".into(),
            key: None,
            allowed_types: vec!["script".into()],
        };
        let (own, foreign): (&[&str], &[&str]) = if cfg!(windows) {
            (&["cmd", "powershell", "pwsh", "python3"], &["sh", "bash"])
        } else {
            (&["sh", "bash", "python3"], &["cmd", "powershell", "pwsh"])
        };
        let script = |interpreter: Option<&str>| {
            let mut c = command();
            c.kind = "script".into();
            c.parameters = interpreter.map_or(json!({}), |i| json!({ "interpreter": i }));
            c
        };
        assert_eq!(p.check(&script(None), now()), Ok(()), "the default");
        for name in own {
            assert_eq!(p.check(&script(Some(name)), now()), Ok(()), "{name}");
        }
        for name in foreign {
            let refusal = p.check(&script(Some(name)), now()).unwrap_err();
            assert!(
                refusal.reason.ends_with("on this platform"),
                "{name}: {refusal:?}"
            );
        }
    }
}
