//! Remote commands, the parts that touch no network or database: the per-target state
//! machine, the tenants' ed25519 signing, and the in-process registry of agents waiting in a
//! long poll (the "nudge").
//!
//! A target's state is the server's `pending` (waiting to be leased) or `leased` (sent, not
//! yet acknowledged), then what the agent reports ([`CommandState`]). [`transition`] is the
//! whole rule book for reports; the store applies it (`Store::update_command_status`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use muster_proto::api::{Command, CommandState};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tokio::sync::Notify;

use crate::store::commands::{CommandRecord, SigningKeyPair};
use crate::store::{Store, StoreError};

/// Where one target of a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Waiting to be leased (never sent, or its lease ran out).
    Pending,
    /// Sent in a `commands/pending` answer; not acknowledged yet.
    Leased,
    /// What the agent reported last.
    Agent(CommandState),
}

/// Every agent state, for parsing and tests.
pub const AGENT_STATES: [CommandState; 9] = [
    CommandState::Received,
    CommandState::Deferred,
    CommandState::Running,
    CommandState::Succeeded,
    CommandState::Failed,
    CommandState::TimedOut,
    CommandState::Cancelled,
    CommandState::Rejected,
    CommandState::Expired,
];

/// The stored (and wire) name of an agent state.
pub fn state_name(state: CommandState) -> &'static str {
    match state {
        CommandState::Received => "received",
        CommandState::Deferred => "deferred",
        CommandState::Running => "running",
        CommandState::Succeeded => "succeeded",
        CommandState::Failed => "failed",
        CommandState::TimedOut => "timed_out",
        CommandState::Cancelled => "cancelled",
        CommandState::Rejected => "rejected",
        CommandState::Expired => "expired",
    }
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Leased => "leased",
            TargetState::Agent(state) => state_name(state),
        }
    }

    pub fn parse(text: &str) -> Option<TargetState> {
        match text {
            "pending" => Some(TargetState::Pending),
            "leased" => Some(TargetState::Leased),
            _ => AGENT_STATES
                .into_iter()
                .find(|s| state_name(*s) == text)
                .map(TargetState::Agent),
        }
    }

    /// Whether the target has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, TargetState::Agent(s) if s.is_terminal())
    }
}

/// What a report of state `to` does to a target in state `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A legal move: store the new state and the report's details.
    Apply,
    /// The target is already in that state (a retry after a lost answer): nothing changes.
    Repeat,
    /// Not allowed (409).
    Illegal,
}

/// The state machine of an agent's reports:
/// - leased → any agent state (`received` is implied by any later one);
/// - received → deferred | running | any terminal state;
/// - deferred → deferred (a new reason) | running | any terminal state;
/// - running → succeeded | failed | timed_out | cancelled;
/// - a repeat of the current state changes nothing; a terminal state never changes;
/// - a pending target (never delivered) cannot be reported on. The store treats a target whose
///   lease ran out after delivery as leased, so a late acknowledgement is not refused.
pub fn transition(from: TargetState, to: CommandState) -> Transition {
    use CommandState::*;
    match from {
        TargetState::Pending => Transition::Illegal,
        TargetState::Leased => Transition::Apply,
        TargetState::Agent(Deferred) if to == Deferred => Transition::Apply,
        TargetState::Agent(current) if current == to => Transition::Repeat,
        TargetState::Agent(current) if current.is_terminal() => Transition::Illegal,
        TargetState::Agent(Received | Deferred) => match to {
            Received => Transition::Illegal,
            _ => Transition::Apply,
        },
        TargetState::Agent(Running) => match to {
            Succeeded | Failed | TimedOut | Cancelled => Transition::Apply,
            _ => Transition::Illegal,
        },
        TargetState::Agent(_) => Transition::Illegal,
    }
}

// ----- signing ---------------------------------------------------------------------------

/// A new ed25519 key pair, base64.
pub fn generate_key_pair() -> SigningKeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system's RNG works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a fresh key parses");
    let b64 = base64::engine::general_purpose::STANDARD;
    SigningKeyPair {
        private_pkcs8: b64.encode(pkcs8.as_ref()),
        public_key: b64.encode(pair.public_key().as_ref()),
    }
}

/// The tenant's key pair, made and stored on first need (race-safe: the first stored wins).
pub async fn tenant_key(store: &Store, tenant_id: &str) -> Result<SigningKeyPair, StoreError> {
    if let Some(pair) = store.stored_signing_key(tenant_id).await? {
        return Ok(pair);
    }
    store
        .signing_key(
            tenant_id,
            &generate_key_pair(),
            jiff::Timestamp::now().as_second(),
        )
        .await
}

/// A key pair ready to sign.
pub struct Signer(Ed25519KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    pub fn new(pair: &SigningKeyPair) -> Result<Signer, StoreError> {
        let pkcs8 = base64::engine::general_purpose::STANDARD
            .decode(&pair.private_pkcs8)
            .map_err(|_| StoreError::Corrupt("a tenant signing key is not base64".into()))?;
        Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map(Signer)
            .map_err(|_| StoreError::Corrupt("a tenant signing key does not parse".into()))
    }

    /// Sets `command.signature`: ed25519 over `signing_payload(agent_id)`, base64 (standard,
    /// padded).
    pub fn sign(&self, command: &mut Command, agent_id: &str) {
        command.signature = None;
        let signature = self.0.sign(&command.signing_payload(agent_id));
        command.signature =
            Some(base64::engine::general_purpose::STANDARD.encode(signature.as_ref()));
    }
}

// ----- the nudge --------------------------------------------------------------------------

/// Agents waiting in a long poll, by agent id (ids are unique across tenants), each with the
/// [`Notify`] that wakes it. Entries live while someone waits.
#[derive(Debug, Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    /// The agent's notifier; hold it (and create its `notified()` future) before checking
    /// for work, so a nudge between the check and the wait is not lost.
    pub fn register(&self, agent_id: &str) -> Arc<Notify> {
        let mut map = self
            .map
            .lock()
            .expect("the waiters' lock is never poisoned");
        map.entry(agent_id.to_owned()).or_default().clone()
    }

    /// Drops the agent's entry when no one else waits on it.
    pub fn release(&self, agent_id: &str, notify: Arc<Notify>) {
        let mut map = self
            .map
            .lock()
            .expect("the waiters' lock is never poisoned");
        drop(notify);
        if map.get(agent_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(agent_id);
        }
    }

    /// Wakes the agent's waiting requests, if any.
    pub fn nudge(&self, agent_id: &str) {
        let map = self
            .map
            .lock()
            .expect("the waiters' lock is never poisoned");
        if let Some(notify) = map.get(agent_id) {
            notify.notify_waiters();
        }
    }

    /// How many agents wait now.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .expect("the waiters' lock is never poisoned")
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the commands' handlers share: the long-poll waiters and each tenant's signer (a
/// tenant's key never changes once stored, so it is read once per process).
#[derive(Default)]
pub struct CommandHub {
    pub waiters: Waiters,
    signers: Mutex<HashMap<String, Arc<Signer>>>,
    /// Per tenant: whether it had a command open, and when that was looked up.
    open: Mutex<HashMap<String, (bool, std::time::Instant)>>,
}

/// How long a tenant's "no command open" is trusted before it is looked up again. A command
/// created on this server is known at once; one created on another replica within this time
/// (its long polls are woken by the replicas' relay regardless).
const OPEN_LOOKUP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for CommandHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHub")
            .field("waiters", &self.waiters.len())
            .finish_non_exhaustive()
    }
}

impl CommandHub {
    /// How many commands the agent could lease now plus the cancellations it holds: the
    /// heartbeat's `pending_commands`. Most of the time a tenant has no command open at all,
    /// and a fleet heartbeats thousands of times a second: whether the tenant has one is
    /// looked up at most once per [`OPEN_LOOKUP_EVERY`], and the agent's own count only when
    /// it does.
    pub async fn pending_count(
        &self,
        store: &Store,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let known = self
            .open
            .lock()
            .expect("the open commands' lock is never poisoned")
            .get(tenant_id)
            .filter(|(_, at)| at.elapsed() < OPEN_LOOKUP_EVERY)
            .map(|(open, _)| *open);
        let open = match known {
            Some(open) => open,
            None => {
                let open = store.tenant_has_open_commands(tenant_id).await?;
                self.open
                    .lock()
                    .expect("the open commands' lock is never poisoned")
                    .insert(tenant_id.to_owned(), (open, std::time::Instant::now()));
                open
            }
        };
        if !open {
            return Ok(0);
        }
        store.pending_command_count(tenant_id, agent_id, now).await
    }

    /// A command of the tenant was opened (created, or a cancellation asked) on this server.
    pub fn opened(&self, tenant_id: &str) {
        self.open
            .lock()
            .expect("the open commands' lock is never poisoned")
            .insert(tenant_id.to_owned(), (true, std::time::Instant::now()));
    }

    /// The tenant's signer, its key made on first need.
    pub async fn signer(&self, store: &Store, tenant_id: &str) -> Result<Arc<Signer>, StoreError> {
        if let Some(signer) = self
            .signers
            .lock()
            .expect("the signers' lock is never poisoned")
            .get(tenant_id)
        {
            return Ok(signer.clone());
        }
        let signer = Arc::new(Signer::new(&tenant_key(store, tenant_id).await?)?);
        self.signers
            .lock()
            .expect("the signers' lock is never poisoned")
            .insert(tenant_id.to_owned(), signer.clone());
        Ok(signer)
    }
}

/// Unix seconds as a timestamp; the store holds only times the server checked.
fn time(seconds: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The wire form of a stored command, unsigned.
pub fn wire_command(record: &CommandRecord) -> Result<Command, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("command {}: {what}", record.id));
    Ok(Command {
        id: record.id,
        kind: record.kind.clone(),
        command: record.command.clone(),
        parameters: serde_json::from_str(&record.parameters).map_err(|_| corrupt("parameters"))?,
        priority: u8::try_from(record.priority).map_err(|_| corrupt("priority"))?,
        scheduled_for: record.scheduled_for.map(time),
        timeout_s: record
            .timeout_s
            .map(|t| u64::try_from(t).map_err(|_| corrupt("timeout")))
            .transpose()?,
        maintenance_window: record.maintenance_window,
        locks: serde_json::from_str(&record.locks).map_err(|_| corrupt("locks"))?,
        package_manager: record.package_manager,
        expires_at: record.expires_at.map(time),
        signature: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandState::*;

    fn agent(s: CommandState) -> TargetState {
        TargetState::Agent(s)
    }

    #[test]
    fn every_move_from_every_state() {
        let terminal = [Succeeded, Failed, TimedOut, Cancelled, Rejected, Expired];
        for to in AGENT_STATES {
            assert_eq!(transition(TargetState::Pending, to), Transition::Illegal);
            assert_eq!(transition(TargetState::Leased, to), Transition::Apply);
            // received → deferred | running | terminal; received again is a repeat.
            let expected = if to == Received {
                Transition::Repeat
            } else {
                Transition::Apply
            };
            assert_eq!(
                transition(agent(Received), to),
                expected,
                "received → {to:?}"
            );
            // deferred → received is the only illegal move; deferred again is legal.
            let expected = if to == Received {
                Transition::Illegal
            } else {
                Transition::Apply
            };
            assert_eq!(
                transition(agent(Deferred), to),
                expected,
                "deferred → {to:?}"
            );
            let expected = match to {
                Running => Transition::Repeat,
                Succeeded | Failed | TimedOut | Cancelled => Transition::Apply,
                Received | Deferred | Rejected | Expired => Transition::Illegal,
            };
            assert_eq!(transition(agent(Running), to), expected, "running → {to:?}");
            for from in terminal {
                let expected = if from == to {
                    Transition::Repeat
                } else {
                    Transition::Illegal
                };
                assert_eq!(transition(agent(from), to), expected, "{from:?} → {to:?}");
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        let all = [TargetState::Pending, TargetState::Leased]
            .into_iter()
            .chain(AGENT_STATES.into_iter().map(TargetState::Agent));
        for state in all {
            assert_eq!(TargetState::parse(state.as_str()), Some(state));
            // The wire's names are the stored ones.
            if let TargetState::Agent(s) = state {
                assert_eq!(
                    serde_json::to_value(s).unwrap(),
                    serde_json::json!(state.as_str())
                );
            }
        }
        assert_eq!(TargetState::parse("done"), None);
        assert!(agent(Expired).is_terminal() && !agent(Running).is_terminal());
        assert!(!TargetState::Leased.is_terminal());
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_for_its_agent_only() {
        let pair = generate_key_pair();
        let signer = Signer::new(&pair).unwrap();
        let mut command = Command {
            id: 7,
            kind: "exec".into(),
            command: "/bin/true".into(),
            parameters: serde_json::json!({"args": ["a"]}),
            priority: 3,
            scheduled_for: None,
            timeout_s: Some(5),
            maintenance_window: false,
            locks: vec!["tenant:reboot".into()],
            package_manager: false,
            expires_at: None,
            signature: None,
        };
        signer.sign(&mut command, "agent-1");
        let b64 = base64::engine::general_purpose::STANDARD;
        let public = b64.decode(&pair.public_key).unwrap();
        let signature = b64.decode(command.signature.as_ref().unwrap()).unwrap();
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
        assert!(
            key.verify(&command.signing_payload("agent-1"), &signature)
                .is_ok()
        );
        assert!(
            key.verify(&command.signing_payload("agent-2"), &signature)
                .is_err()
        );
        command.command = "/bin/false".into();
        assert!(
            key.verify(&command.signing_payload("agent-1"), &signature)
                .is_err()
        );
        assert!(!format!("{pair:?}").contains(&pair.private_pkcs8));
    }

    #[tokio::test]
    async fn a_nudge_wakes_a_waiter_registered_before_it_and_the_entry_goes_after() {
        let waiters = Waiters::default();
        let notify = waiters.register("a");
        {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            waiters.nudge("b");
            waiters.nudge("a");
            tokio::time::timeout(std::time::Duration::from_secs(1), notified)
                .await
                .expect("the nudge woke the waiter");
        }
        assert_eq!(waiters.len(), 1);
        waiters.release("a", notify);
        assert!(waiters.is_empty());
    }
}
