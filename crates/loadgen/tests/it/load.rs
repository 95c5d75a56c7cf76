//! The load generator against the real server, in-process on 127.0.0.1:0 over a temporary
//! SQLite database: what it sends is accepted, and the server stored it.

use std::time::Duration;

use muster_loadgen::LoadConfig;
use muster_loadgen::fleet::{Enrolments, Token};
use muster_loadgen::payload::{Payloads, Template};
use muster_loadgen::schedule::Intervals;
use muster_loadgen::stats::{Phase, Report};
use muster_server::ServerConfig;
use muster_server::store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    url: String,
    tenant_id: String,
    enrol_token: String,
    store: Store,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("muster.db").display());
    let store = Store::open(&database_url).await.unwrap();
    let tenant = muster_server::admin::create_tenant(&store, "load")
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        listen: listener.local_addr().unwrap(),
        database_url,
        ..ServerConfig::default()
    };
    let url = format!("http://{}", config.listen);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        muster_server::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        url,
        tenant_id: tenant.tenant.id,
        enrol_token: tenant.enrol_token.expose().to_owned(),
        store,
        stop,
        task,
        dir,
    }
}

fn accepted(phase: &Phase, endpoint: &str) -> u64 {
    phase
        .endpoints
        .iter()
        .find(|e| e.endpoint == endpoint)
        .map_or(0, |e| e.accepted)
}

fn assert_clean(report: &Report) {
    assert_eq!(report.errors(), 0, "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_report_without_errors_and_the_server_stores_it_all() {
    let server = server().await;
    let enrolments_file = server.dir.path().join("enrolments.json");
    let mut config = LoadConfig::new(
        &server.url,
        &server.tenant_id,
        Some(Token::new(server.enrol_token.clone())),
    );
    config.agents = 50;
    config.duration = Duration::from_secs(2);
    // The agent's schedule, compressed: every agent runs each job about twice or more.
    config.intervals = Intervals {
        heartbeat: Duration::from_millis(500),
        telemetry: Duration::from_millis(1000),
        inventory: Duration::from_millis(1000),
        splay: Duration::from_millis(100),
    };
    config.delta_ratio = 0.1;
    // A debug build of the server ingests a full inventory in tens of milliseconds; more
    // registrations at once make SQLite writers wait past the server's 5 s busy timeout
    // (answered 500; see docs/BENCHMARKS.md, "Server load").
    config.concurrency = 4;
    config.enrolments = Some(enrolments_file.clone());
    let payloads = Payloads::new(Template::scan(), config.seed, config.bumped_packages);

    let report = muster_loadgen::run(&config, payloads.clone())
        .await
        .unwrap();
    assert_clean(&report);
    assert_eq!(report.enrolled, 50);
    let enrolment = report.enrolment.as_ref().expect("the agents were enrolled");
    assert_eq!(accepted(enrolment, "register"), 50);
    assert_eq!(accepted(enrolment, "inventory full"), 50);
    let load = &report.load;
    assert!(accepted(load, "heartbeat") >= 100, "{}", report.table());
    assert!(accepted(load, "telemetry") >= 50, "{}", report.table());
    let inventories = accepted(load, "inventory unchanged") + accepted(load, "inventory delta");
    assert!(inventories >= 50, "{}", report.table());
    assert!(report.loadgen_process.is_some());

    // The server holds every agent, its last heartbeat, its telemetry and the inventory
    // whose hash the agent was last acknowledged.
    let saved = Enrolments::load(&enrolments_file, &server.tenant_id, config.seed).unwrap();
    assert_eq!(saved.agents.len(), 50);
    let agents = server.store.list_agents(&server.tenant_id).await.unwrap();
    assert_eq!(agents.len(), 50);
    for enrolment in &saved.agents {
        let agent = agents.iter().find(|a| a.id == enrolment.agent_id).unwrap();
        assert!(agent.hostname.starts_with("load-"), "{}", agent.hostname);
        assert!(agent.last_seen.is_some() && agent.health.is_some());
        let inventory = server
            .store
            .inventory(&server.tenant_id, &agent.id)
            .await
            .unwrap()
            .expect("an inventory is stored");
        assert_eq!(Some(&inventory.hash), enrolment.hash.as_ref());
        let samples = server
            .store
            .metrics(&server.tenant_id, &agent.id, 0, i64::MAX)
            .await
            .unwrap();
        assert!(
            !samples.is_empty(),
            "no telemetry stored for {}",
            agent.hostname
        );
    }
    assert!(
        saved.agents.iter().any(|a| a.generation > 0),
        "no agent had a delta accepted"
    );

    // A rerun reuses the registrations: nobody registers again, and the server still
    // holds every acknowledged hash (no 409 on "unchanged").
    config.duration = Duration::from_secs(1);
    config.enrol_token = None;
    let again = muster_loadgen::run(&config, payloads).await.unwrap();
    assert_clean(&again);
    assert_eq!(again.enrolled, 0);
    assert!(again.enrolment.is_none());
    assert!(accepted(&again.load, "heartbeat") >= 50);

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}
