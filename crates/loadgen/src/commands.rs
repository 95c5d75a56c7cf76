//! The commands benchmark (`--commands N`): enrols `agents` simulated agents, queues `N`
//! (command, agent) pairs through the admin API (each command for `per_command` consecutive
//! agents), then has every agent lease its commands and report them `received` and
//! `succeeded`, as the real agent does. It counts each (agent, command) delivered, so a
//! command delivered twice is caught, checks through the admin API that every target ended
//! `succeeded`, and reports the throughput of each phase.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::fleet::Token;

/// What to run.
#[derive(Debug, Clone)]
pub struct CommandsConfig {
    /// The server's root url (`http://HOST:PORT`).
    pub server: String,
    pub tenant_id: String,
    pub enrol_token: Token,
    pub admin_token: Token,
    pub agents: u32,
    /// (command, agent) pairs to queue.
    pub commands: u64,
    /// Agents per command created.
    pub per_command: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub timeout: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// What the run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandsReport {
    pub agents: u32,
    /// Commands created through the admin API.
    pub created: u64,
    /// (command, agent) pairs queued.
    pub queued: u64,
    pub queue_seconds: f64,
    /// Pairs queued per second.
    pub queue_rate: f64,
    /// Pairs leased and completed.
    pub completed: u64,
    /// A pair delivered more than once to its agent.
    pub duplicates: u64,
    pub drain_seconds: f64,
    /// Pairs leased and completed per second.
    pub drain_rate: f64,
    /// Agents' requests (leases and status reports) per second while draining.
    pub requests_per_second: f64,
    /// Targets the admin API shows in another state than `succeeded` at the end.
    pub not_succeeded: u64,
    /// Requests answered with an error (or not at all).
    pub errors: u64,
}

impl CommandsReport {
    /// A short table.
    pub fn table(&self) -> String {
        format!(
            "agents                 {}\n\
             commands created       {}\n\
             pairs queued           {} in {:.1} s ({:.0}/s)\n\
             pairs completed        {} in {:.1} s ({:.0}/s, {:.0} agent requests/s)\n\
             duplicate deliveries   {}\n\
             not succeeded at end   {}\n\
             errors                 {}\n",
            self.agents,
            self.created,
            self.queued,
            self.queue_seconds,
            self.queue_rate,
            self.completed,
            self.drain_seconds,
            self.drain_rate,
            self.requests_per_second,
            self.duplicates,
            self.not_succeeded,
            self.errors,
        )
    }

    /// Whether everything queued ran exactly once and ended `succeeded`.
    pub fn clean(&self) -> bool {
        self.errors == 0
            && self.duplicates == 0
            && self.not_succeeded == 0
            && self.completed == self.queued
    }
}

/// An agent's id and token.
type Registered = (String, String);

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, body))
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send(
            self.http
                .post(format!("{}/{path}", self.api))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        self.send(
            self.http
                .get(format!("{}/{path}", self.api))
                .bearer_auth(token),
        )
        .await
    }
}

/// Runs `jobs` (0..n) with at most `concurrency` at once.
async fn for_each<F, Fut>(n: usize, concurrency: usize, job: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1).min(n.max(1)) {
        let (next, job) = (next.clone(), job.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                job(i).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Runs the benchmark.
pub async fn run(config: &CommandsConfig) -> anyhow::Result<CommandsReport> {
    anyhow::ensure!(config.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(config.per_command > 0, "--per-command must be at least 1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = config.server.trim_end_matches('/');
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.concurrency)
            .tls_certs_only(Vec::new())
            .build()
            .context("building the http client")?,
        api: format!("{}/api", root.strip_suffix("/api").unwrap_or(root)),
    });
    let errors = Arc::new(AtomicUsize::new(0));
    let progress = |text: String| {
        if config.progress {
            eprintln!("{text}");
        }
    };

    // Enrolment.
    let agents: Arc<Mutex<Vec<Option<Registered>>>> =
        Arc::new(Mutex::new(vec![None; config.agents as usize]));
    let started = Instant::now();
    {
        let (client, agents, errors) = (client.clone(), agents.clone(), errors.clone());
        let (tenant, enrol, seed) = (
            config.tenant_id.clone(),
            config.enrol_token.expose().to_owned(),
            config.seed,
        );
        for_each(config.agents as usize, config.concurrency, move |i| {
            let (client, agents, errors) = (client.clone(), agents.clone(), errors.clone());
            let (tenant, enrol) = (tenant.clone(), enrol.clone());
            async move {
                let host = format!("cmd-{seed}-{i:06}");
                let body = json!({"tenant_id": tenant, "hostname": host,
                    "machine_id": host, "platform": "Linux"});
                match client.post("agents/register", &enrol, &body).await {
                    Ok((200, answer)) => {
                        let id = answer["agent_id"].as_str().unwrap_or_default().to_owned();
                        let token = answer["agent_token"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        agents.lock().expect("not poisoned")[i] = Some((id, token));
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    }
    let agents: Vec<Registered> = agents
        .lock()
        .expect("not poisoned")
        .iter()
        .flatten()
        .cloned()
        .collect();
    anyhow::ensure!(
        agents.len() == config.agents as usize,
        "{} of {} agents could not register",
        config.agents as usize - agents.len(),
        config.agents
    );
    progress(format!(
        "{} agents registered in {:.1} s",
        agents.len(),
        started.elapsed().as_secs_f64()
    ));
    let agents = Arc::new(agents);

    // Queue: command k targets `per_command` consecutive agents from k × per_command.
    let per = u64::from(config.per_command).min(u64::from(config.agents));
    let creates = config.commands.div_ceil(per) as usize;
    let created: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
    let started = Instant::now();
    {
        let (client, agents, errors, created) = (
            client.clone(),
            agents.clone(),
            errors.clone(),
            created.clone(),
        );
        let (admin, total) = (config.admin_token.expose().to_owned(), config.commands);
        for_each(creates, config.concurrency.min(8), move |k| {
            let (client, agents, errors, created) = (
                client.clone(),
                agents.clone(),
                errors.clone(),
                created.clone(),
            );
            let admin = admin.clone();
            async move {
                let first = k as u64 * per;
                let count = per.min(total - first);
                let ids: Vec<&str> = (0..count)
                    .map(|j| {
                        agents[((first + j) % agents.len() as u64) as usize]
                            .0
                            .as_str()
                    })
                    .collect();
                let body = json!({"agent_ids": ids, "type": "builtin", "command": "scan_now"});
                match client.post("admin/commands", &admin, &body).await {
                    Ok((201, answer)) => created
                        .lock()
                        .expect("not poisoned")
                        .push((answer["id"].as_i64().unwrap_or_default(), count)),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    }
    let queue_seconds = started.elapsed().as_secs_f64();
    let created = created.lock().expect("not poisoned").clone();
    let queued: u64 = created.iter().map(|c| c.1).sum();
    progress(format!(
        "{queued} (command, agent) pairs queued in {} commands, {queue_seconds:.1} s",
        created.len()
    ));

    // Drain: each agent leases until nothing is left, reporting each command received and
    // succeeded.
    let seen: Arc<Mutex<HashSet<(usize, i64)>>> = Arc::default();
    let duplicates = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    {
        let (client, agents, errors) = (client.clone(), agents.clone(), errors.clone());
        let (seen, duplicates, requests) = (seen.clone(), duplicates.clone(), requests.clone());
        for_each(agents.len(), config.concurrency, move |i| {
            let (client, agents, errors) = (client.clone(), agents.clone(), errors.clone());
            let (seen, duplicates, requests) = (seen.clone(), duplicates.clone(), requests.clone());
            async move {
                let token = &agents[i].1;
                loop {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let commands = match client.get("commands/pending", token).await {
                        Ok((200, answer)) => {
                            answer["commands"].as_array().cloned().unwrap_or_default()
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    if commands.is_empty() {
                        return;
                    }
                    for command in commands {
                        let id = command["id"].as_i64().unwrap_or_default();
                        if !seen.lock().expect("not poisoned").insert((i, id)) {
                            duplicates.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        for status in ["received", "succeeded"] {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let body = json!({"command_id": id, "status": status, "exit_code": 0});
                            if !matches!(
                                client.post("commands/status", token, &body).await,
                                Ok((204, _))
                            ) {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        })
        .await;
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    let completed = seen.lock().expect("not poisoned").len() as u64;
    progress(format!(
        "{completed} pairs completed in {drain_seconds:.1} s"
    ));

    // Check through the admin API: every target of every command succeeded.
    let mut not_succeeded = 0;
    for (id, count) in &created {
        match client
            .get(&format!("admin/commands/{id}"), config.admin_token.expose())
            .await
        {
            Ok((200, answer)) => {
                let succeeded = answer["states"]["succeeded"].as_u64().unwrap_or(0);
                not_succeeded += count.saturating_sub(succeeded);
            }
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let rate = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    Ok(CommandsReport {
        agents: config.agents,
        created: created.len() as u64,
        queued,
        queue_seconds,
        queue_rate: rate(queued as f64, queue_seconds),
        completed,
        duplicates: duplicates.load(Ordering::Relaxed) as u64,
        drain_seconds,
        drain_rate: rate(completed as f64, drain_seconds),
        requests_per_second: rate(requests.load(Ordering::Relaxed) as f64, drain_seconds),
        not_succeeded,
        errors: errors.load(Ordering::Relaxed) as u64,
    })
}
