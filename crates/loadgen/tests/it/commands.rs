//! The commands benchmark against the real server in-process (SQLite): every pair queued is
//! leased and completed once, and the admin API shows them all `succeeded`.

use muster_loadgen::commands::{CommandsConfig, run};
use muster_loadgen::fleet::Token;
use muster_server::ServerConfig;
use muster_server::store::Store;
use tokio::net::TcpListener;

#[tokio::test]
async fn queued_commands_are_each_completed_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("muster.db").display());
    let store = Store::open(&database_url).await.unwrap();
    let tenant = muster_server::admin::create_tenant(&store, "bench")
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        listen: listener.local_addr().unwrap(),
        database_url,
        ..ServerConfig::default()
    };
    let url = format!("http://{}", config.listen);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        muster_server::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let report = run(&CommandsConfig {
        server: url,
        tenant_id: tenant.tenant.id.clone(),
        enrol_token: Token::new(tenant.enrol_token.expose().to_owned()),
        admin_token: Token::new(tenant.admin_token.expose().to_owned()),
        agents: 20,
        // 7 commands of 15 agents, the last one of 5: 4 or 5 per agent, wrapping around.
        commands: 95,
        per_command: 15,
        concurrency: 8,
        timeout: std::time::Duration::from_secs(30),
        seed: 1,
        progress: false,
    })
    .await
    .unwrap();
    assert_eq!(report.created, 7);
    assert_eq!(report.queued, 95);
    assert_eq!(report.completed, 95);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.not_succeeded, 0);
    assert_eq!(report.errors, 0);
    assert!(report.clean());
    let _ = stop.send(());
    server.await.unwrap();
    store.close().await;
}
