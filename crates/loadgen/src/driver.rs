//! The run: enrol the agents that need it, then play the schedule against the server for the
//! duration, and report.
//!
//! One task drives the whole fleet: it pops due jobs from the [`Schedule`] heap, builds each
//! request synchronously and hands it to a [`JoinSet`] task, and folds finished requests back
//! into the agents' state and the [`Recorder`]. There is no task or timer per agent, so 150,000
//! agents cost a heap and a vector, and the requests share one keep-alive connection pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use muster_proto::api::{self, AgentHealth, InventoryAck, RegisterResponse};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::{Enrolment, Enrolments, Token};
use crate::payload::{Body, Payloads};
use crate::procfs::Watch;
use crate::rng::Rng;
use crate::schedule::{Intervals, Job, Schedule, Start};
use crate::stats::{Endpoint, Expected, Outcome, Recorder, Report};

/// Everything a run needs, resolved.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server's root (`http://127.0.0.1:3000`); `/api` is added.
    pub server: String,
    pub tenant_id: String,
    /// Needed only when some agent is not in the enrolments file yet.
    pub enrol_token: Option<Token>,
    pub agents: u32,
    pub duration: Duration,
    pub intervals: Intervals,
    pub start: Start,
    /// The share of inventory runs that upload a package upgrade (a delta) rather than
    /// "unchanged".
    pub delta_ratio: f64,
    /// Packages at a version of the agent's own, per agent.
    pub bumped_packages: usize,
    /// Where registrations are kept across runs.
    pub enrolments: Option<PathBuf>,
    /// Agents registering at once.
    pub concurrency: usize,
    /// Requests in flight at most during the load; past it the generator falls behind (and
    /// its lag shows it) rather than pile up connections.
    pub max_in_flight: usize,
    pub server_pid: Option<u32>,
    pub seed: u64,
    /// Per request.
    pub timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl LoadConfig {
    /// The defaults of everything but the server, tenant and token.
    pub fn new(server: &str, tenant_id: &str, enrol_token: Option<Token>) -> LoadConfig {
        LoadConfig {
            server: server.to_owned(),
            tenant_id: tenant_id.to_owned(),
            enrol_token,
            agents: 1_000,
            duration: Duration::from_secs(60),
            intervals: Intervals::AGENT_DEFAULTS,
            start: Start::Steady,
            delta_ratio: 0.05,
            bumped_packages: 3,
            enrolments: None,
            concurrency: 32,
            max_in_flight: 1_024,
            server_pid: None,
            seed: 1,
            timeout: Duration::from_secs(30),
            progress: false,
        }
    }
}

/// The agents' API over one connection pool.
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
    register: Url,
    heartbeat: Url,
    system_report: Url,
    metrics: Url,
}

impl Http {
    fn new(config: &LoadConfig) -> anyhow::Result<Http> {
        let root = config.server.trim_end_matches('/');
        let root = root.strip_suffix("/api").unwrap_or(root);
        let base = Url::parse(&format!("{root}/api/"))
            .with_context(|| format!("the server url {:?}", config.server))?;
        anyhow::ensure!(
            base.scheme() == "http",
            "the load generator speaks plain http to a local server, not {}",
            base.scheme()
        );
        let url = |path: &str| base.join(path).expect("the api paths are relative urls");
        // reqwest wants a crypto provider even for plain http; an error only means one is
        // installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(config.max_in_flight.max(config.concurrency))
            .pool_idle_timeout(Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_only(Vec::new())
            .build()
            .context("building the http client")?;
        Ok(Http {
            client,
            register: url(api::paths::REGISTER),
            heartbeat: url(api::paths::HEARTBEAT),
            system_report: url(api::paths::SYSTEM_REPORT),
            metrics: url(api::paths::METRICS_REPORT),
        })
    }

    fn url(&self, endpoint: Endpoint) -> Url {
        match endpoint {
            Endpoint::Register => self.register.clone(),
            Endpoint::Heartbeat => self.heartbeat.clone(),
            Endpoint::Telemetry => self.metrics.clone(),
            Endpoint::InventoryFull | Endpoint::InventoryDelta | Endpoint::InventoryUnchanged => {
                self.system_report.clone()
            }
        }
    }

    /// One POST; the latency runs from sending to the end of the answer.
    async fn post(&self, endpoint: Endpoint, auth: HeaderValue, body: Body) -> Answer {
        let mut request = self
            .client
            .post(self.url(endpoint))
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json");
        if body.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        let request = request.body(body.bytes);
        let started = std::time::Instant::now();
        let result = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>((status, bytes))
        }
        .await;
        let latency = started.elapsed();
        let (outcome, bytes) = match result {
            Ok((status, bytes)) if status.is_success() => (Outcome::Accepted, bytes),
            Ok((status, _)) => (Outcome::Status(status.as_u16()), Default::default()),
            Err(_) => (Outcome::Transport, Default::default()),
        };
        Answer {
            endpoint,
            outcome,
            latency,
            bytes,
        }
    }
}

#[derive(Debug)]
struct Answer {
    endpoint: Endpoint,
    outcome: Outcome,
    latency: Duration,
    bytes: Vec<u8>,
}

fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("a token is not a header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The acknowledged hash in an inventory answer.
fn acked_hash(answer: &Answer) -> Option<String> {
    serde_json::from_slice::<InventoryAck>(&answer.bytes)
        .ok()
        .and_then(|ack| ack.hash)
}

/// Runs the whole thing: enrolment as needed, the load for `config.duration`, the report.
pub async fn run(config: &LoadConfig, payloads: Payloads) -> anyhow::Result<Report> {
    anyhow::ensure!(config.agents > 0, "no agents to simulate");
    let http = Http::new(config)?;
    let payloads = Arc::new(payloads);
    let mut enrolments = match &config.enrolments {
        Some(path) => Enrolments::load(path, &config.tenant_id, config.seed)?,
        None => Enrolments::new(&config.tenant_id, config.seed),
    };
    let registered_before = enrolments.agents.len();
    let needs_enrolment = registered_before < config.agents as usize
        || enrolments.agents[..config.agents as usize]
            .iter()
            .any(|a| a.hash.is_none());
    let enrolment = if needs_enrolment {
        let recorder = enrol(config, &http, &payloads, &mut enrolments).await?;
        Some(recorder)
    } else {
        None
    };
    let enrolled = enrolments.agents.len().saturating_sub(registered_before) as u32;
    let ((recorder, elapsed), server_process, loadgen_process) = load(
        config,
        &http,
        &payloads,
        &mut enrolments.agents[..config.agents as usize],
    )
    .await?;
    if let Some(path) = &config.enrolments {
        enrolments.save(path)?;
    }
    let agents = config.agents;
    Ok(Report {
        server: config.server.clone(),
        agents,
        enrolled,
        template_packages: payloads.template().packages(),
        expected_per_s: Expected {
            heartbeat: config.intervals.rate(Job::Heartbeat, agents),
            telemetry: config.intervals.rate(Job::Telemetry, agents),
            inventory: config.intervals.rate(Job::Inventory, agents),
        },
        enrolment: enrolment.map(|(recorder, elapsed)| recorder.phase(elapsed)),
        load: recorder.phase(elapsed),
        server_process,
        loadgen_process,
    })
}

/// What one enrolment task did.
struct Enrolled {
    index: u32,
    registered: Option<(String, Token)>,
    hash: Option<String>,
    answers: Vec<Answer>,
}

/// Registers the agents missing from `enrolments` and sends every agent without an
/// acknowledged inventory its first one, whole; `concurrency` agents at a time. Saves the
/// file as it goes (every 10,000 agents), so an interrupted enrolment is not lost.
async fn enrol(
    config: &LoadConfig,
    http: &Http,
    payloads: &Arc<Payloads>,
    enrolments: &mut Enrolments,
) -> anyhow::Result<(Recorder, Duration)> {
    let started = Instant::now();
    let mut recorder = Recorder::default();
    let registered = enrolments.agents.len() as u32;
    let to_prime: Vec<u32> = (0..registered.min(config.agents))
        .filter(|&i| enrolments.agents[i as usize].hash.is_none())
        .collect();
    let work: Vec<u32> = to_prime
        .into_iter()
        .chain(registered..config.agents)
        .collect();
    let enrol_auth = match (&config.enrol_token, registered < config.agents) {
        (Some(token), _) => Some(bearer(token.expose())?),
        (None, true) => anyhow::bail!(
            "{} agents need registering and no enrolment token was given",
            config.agents - registered
        ),
        (None, false) => None,
    };
    let mut new: Vec<Option<Enrolment>> =
        vec![None; (config.agents - registered.min(config.agents)) as usize];
    let mut tasks = JoinSet::new();
    let mut queue = work.iter().copied();
    let mut done = 0usize;
    let mut last_progress = Instant::now();
    let mut last_saved = 0usize;
    loop {
        while tasks.len() < config.concurrency.max(1) {
            let Some(index) = queue.next() else { break };
            let existing = enrolments.agents.get(index as usize).cloned();
            let (http, payloads) = (http.clone(), Arc::clone(payloads));
            let tenant_id = config.tenant_id.clone();
            let enrol_auth = enrol_auth.clone();
            tasks.spawn(async move {
                enrol_one(index, existing, &http, &payloads, &tenant_id, enrol_auth).await
            });
        }
        let Some(result) = tasks.join_next().await else {
            break;
        };
        let enrolled = result.context("an enrolment task failed")??;
        for answer in &enrolled.answers {
            recorder.record(answer.endpoint, answer.outcome, answer.latency);
        }
        let i = enrolled.index as usize;
        match enrolled.registered {
            Some((agent_id, agent_token)) => {
                new[i - registered as usize] = Some(Enrolment {
                    index: enrolled.index,
                    agent_id,
                    agent_token,
                    hash: enrolled.hash,
                    generation: 0,
                });
            }
            None if i < registered as usize => enrolments.agents[i].hash = enrolled.hash,
            None => {}
        }
        done += 1;
        if config.progress && last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "enrolment: {done}/{} agents in {seconds:.0} s ({:.0}/s), {} errors",
                work.len(),
                done as f64 / seconds,
                recorder.errors()
            );
        }
        if done - last_saved >= 10_000 {
            last_saved = done;
            save_prefix(config, enrolments, &mut new)?;
        }
    }
    save_prefix(config, enrolments, &mut new)?;
    let missing = new.iter().filter(|n| n.is_none()).count();
    if missing > 0 {
        let all = recorder.phase(started.elapsed()).all;
        anyhow::bail!(
            "{missing} agents could not register (failures: statuses {:?}, {} transport); \
             rerun to retry them",
            all.statuses,
            all.transport_errors
        );
    }
    Ok((recorder, started.elapsed()))
}

/// Moves the registered agents that now follow the file's last one without a gap into it,
/// and writes the file.
fn save_prefix(
    config: &LoadConfig,
    enrolments: &mut Enrolments,
    new: &mut Vec<Option<Enrolment>>,
) -> anyhow::Result<()> {
    let ready = new.iter().take_while(|n| n.is_some()).count();
    enrolments.agents.extend(new.drain(..ready).flatten());
    match &config.enrolments {
        Some(path) => enrolments.save(path),
        None => Ok(()),
    }
}

/// Registers agent `index` unless `existing`, then sends its first inventory whole.
async fn enrol_one(
    index: u32,
    existing: Option<Enrolment>,
    http: &Http,
    payloads: &Payloads,
    tenant_id: &str,
    enrol_auth: Option<HeaderValue>,
) -> anyhow::Result<Enrolled> {
    let mut answers = Vec::new();
    let mut registered = None;
    let (agent_id, token) = match existing {
        Some(e) => (e.agent_id, e.agent_token),
        None => {
            let request = payloads.register(tenant_id, index);
            let auth = enrol_auth.expect("checked before enrolling");
            let answer = http
                .post(Endpoint::Register, auth, Body::json(&request))
                .await;
            let response = match answer.outcome {
                Outcome::Accepted => serde_json::from_slice::<RegisterResponse>(&answer.bytes)
                    .context("an undecodable registration answer")?,
                _ => {
                    answers.push(answer);
                    return Ok(Enrolled {
                        index,
                        registered: None,
                        hash: None,
                        answers,
                    });
                }
            };
            answers.push(answer);
            let token = Token::new(response.agent_token);
            registered = Some((response.agent_id.clone(), token.clone()));
            (response.agent_id, token)
        }
    };
    let (hash, body) = payloads.full(index, &agent_id, 0);
    let answer = http
        .post(Endpoint::InventoryFull, bearer(token.expose())?, body)
        .await;
    let hash = match answer.outcome {
        Outcome::Accepted => Some(acked_hash(&answer).unwrap_or(hash)),
        _ => None,
    };
    answers.push(answer);
    Ok(Enrolled {
        index,
        registered,
        hash,
        answers,
    })
}

/// One agent during the load.
struct Agent {
    auth: HeaderValue,
    /// Seconds the simulated host had been up when the load began.
    uptime_at_start: u64,
    heartbeats: u64,
    telemetry_runs: u64,
    inventory_runs: u64,
    /// An inventory upload is on its way; the next waits for its answer (the agent's
    /// inventories are sequential too).
    inventory_in_flight: bool,
}

/// What a finished request changes.
struct Done {
    agent: u32,
    /// For inventories: the generation the upload carried.
    generation: u32,
    answer: Answer,
}

type Load = (
    (Recorder, Duration),
    Option<crate::procfs::Usage>,
    Option<crate::procfs::Usage>,
);

/// Plays the schedule for `config.duration`.
async fn load(
    config: &LoadConfig,
    http: &Http,
    payloads: &Arc<Payloads>,
    enrolments: &mut [Enrolment],
) -> anyhow::Result<Load> {
    let mut agents: Vec<Agent> = enrolments
        .iter()
        .map(|e| {
            let mut rng = Rng::new(&[config.seed, u64::from(e.index), 0xab]);
            Ok(Agent {
                auth: bearer(e.agent_token.expose())?,
                uptime_at_start: 600 + rng.below(30 * 86_400),
                heartbeats: 0,
                telemetry_runs: 0,
                inventory_runs: 0,
                inventory_in_flight: false,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut schedule = Schedule::new(config.agents, config.intervals, config.start, config.seed);
    let mut choices = Rng::new(&[config.seed, jiff::Timestamp::now().as_nanosecond() as u64]);
    let mut recorder = Recorder::default();
    let mut server = config.server_pid.map(|pid| Watch::new(pid.to_string()));
    let mut own = Watch::new("self");
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut skipped_inventories = 0u64;
    let max_in_flight = config.max_in_flight.max(1);
    let start = Instant::now();
    let end = start + config.duration;
    let mut next_progress = start + Duration::from_secs(10);
    loop {
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        while tasks.len() < max_in_flight {
            let Some(due) = schedule.pop_due(now_ms) else {
                break;
            };
            recorder.record_lag(Duration::from_millis(now_ms - due.at));
            let i = due.agent as usize;
            let (agent, enrolment) = (&mut agents[i], &enrolments[i]);
            let (endpoint, generation, body) = match due.job {
                Job::Heartbeat => {
                    agent.heartbeats += 1;
                    let health = AgentHealth {
                        scans_completed: agent.telemetry_runs + agent.inventory_runs,
                        last_inventory: None,
                        last_telemetry: None,
                        ..AgentHealth::default()
                    };
                    let uptime = agent.uptime_at_start + now_ms / 1000;
                    let body = payloads.heartbeat(
                        &enrolment.agent_id,
                        uptime,
                        config.intervals.heartbeat.as_secs(),
                        health,
                    );
                    (Endpoint::Heartbeat, 0, body)
                }
                Job::Telemetry => {
                    agent.telemetry_runs += 1;
                    let body =
                        payloads.metrics(due.agent, &enrolment.agent_id, agent.telemetry_runs);
                    (Endpoint::Telemetry, 0, body)
                }
                Job::Inventory if agent.inventory_in_flight => {
                    skipped_inventories += 1;
                    continue;
                }
                Job::Inventory => {
                    agent.inventory_runs += 1;
                    agent.inventory_in_flight = true;
                    match &enrolment.hash {
                        None => {
                            let (_, body) =
                                payloads.full(due.agent, &enrolment.agent_id, enrolment.generation);
                            (Endpoint::InventoryFull, enrolment.generation, body)
                        }
                        Some(hash) if choices.unit() < config.delta_ratio => {
                            let generation = enrolment.generation + 1;
                            let (_, body) =
                                payloads.delta(due.agent, &enrolment.agent_id, hash, generation);
                            (Endpoint::InventoryDelta, generation, body)
                        }
                        Some(hash) => {
                            let body = payloads.unchanged(&enrolment.agent_id, hash);
                            (Endpoint::InventoryUnchanged, enrolment.generation, body)
                        }
                    }
                }
            };
            let (http, auth, agent_index) = (http.clone(), agent.auth.clone(), due.agent);
            tasks.spawn(async move {
                Done {
                    agent: agent_index,
                    generation,
                    answer: http.post(endpoint, auth, body).await,
                }
            });
        }
        let wake = (tasks.len() < max_in_flight)
            .then(|| schedule.next_at())
            .flatten()
            .map(|ms| start + Duration::from_millis(ms));
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(end) => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let done = done.context("a request task failed")?;
                finish(&mut recorder, &mut agents, enrolments, done);
            }
            () = tokio::time::sleep_until(wake.unwrap_or(end)), if wake.is_some() => {}
            _ = ticker.tick() => {
                if let Some(w) = &mut server {
                    w.sample();
                }
                own.sample();
                if config.progress && Instant::now() >= next_progress {
                    next_progress += Duration::from_secs(10);
                    let seconds = start.elapsed().as_secs_f64();
                    let (lag_p99, _) = recorder.lag_ms();
                    eprintln!(
                        "load: {seconds:.0} s, {:.0} heartbeats/s, {} in flight, {} errors, lag p99 {lag_p99:.0} ms",
                        recorder.accepted(Endpoint::Heartbeat) as f64 / seconds,
                        tasks.len(),
                        recorder.errors(),
                    );
                }
            }
        }
    }
    let elapsed = start.elapsed();
    // What was sent is answered (or times out) and counted.
    while let Some(done) = tasks.join_next().await {
        finish(
            &mut recorder,
            &mut agents,
            enrolments,
            done.context("a request task failed")?,
        );
    }
    if let Some(w) = &mut server {
        w.sample();
    }
    own.sample();
    if skipped_inventories > 0 && config.progress {
        eprintln!(
            "load: {skipped_inventories} inventory runs skipped while the previous one was unanswered"
        );
    }
    Ok((
        (recorder, elapsed),
        server.and_then(|w| w.usage()),
        own.usage(),
    ))
}

fn finish(recorder: &mut Recorder, agents: &mut [Agent], enrolments: &mut [Enrolment], done: Done) {
    let Done {
        agent,
        generation,
        answer,
    } = done;
    recorder.record(answer.endpoint, answer.outcome, answer.latency);
    let i = agent as usize;
    if !matches!(
        answer.endpoint,
        Endpoint::InventoryFull | Endpoint::InventoryDelta | Endpoint::InventoryUnchanged
    ) {
        return;
    }
    agents[i].inventory_in_flight = false;
    let enrolment = &mut enrolments[i];
    match answer.outcome {
        Outcome::Accepted => {
            if let Some(hash) = acked_hash(&answer) {
                enrolment.hash = Some(hash);
            }
            enrolment.generation = generation;
        }
        // The server does not hold the base: the next inventory goes whole, as the agent's.
        Outcome::Status(409) => enrolment.hash = None,
        _ => {}
    }
}
