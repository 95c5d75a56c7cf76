//! `windows_services` lists what the SCM holds: Wine's own services, and one this test
//! registers with `sc.exe` and deletes again.

use muster_proto::data::Service;
use muster_proto::{FunctionData, Worker};

use super::{output, report};

fn services() -> Vec<Service> {
    let report = report(Worker::Services, "windows_services");
    assert_eq!(report.error, None);
    let FunctionData::WindowsServices(services) = report.data else {
        panic!()
    };
    services
}

/// Deletes the service on drop, whatever the test's outcome.
struct Registered(String);

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sc.exe")
            .args(["delete", &self.0])
            .output();
    }
}

#[test]
fn lists_wines_services_and_one_the_test_registers() {
    let name = format!("MusterTestSvc{}", std::process::id());
    output(
        "sc.exe",
        &[
            "create",
            &name,
            r"binPath=",
            r"C:\windows\system32\notepad.exe",
            "start=",
            "demand",
            "DisplayName=",
            "Muster collector test",
        ],
    );
    let registered = Registered(name.clone());

    let listed = services();
    let find = |name: &str| {
        listed
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no {name} in {listed:#?}"))
    };
    let ours = find(&name);
    assert_eq!(ours.load_state, "demand", "{ours:?}");
    assert_eq!(
        (ours.active_state.as_str(), ours.sub_state.as_str()),
        ("inactive", "stopped")
    );
    assert_eq!(ours.description.as_deref(), Some("Muster collector test"));
    assert_eq!(ours.display_name.as_deref(), Some("Muster collector test"));
    assert_eq!(ours.start_type.as_deref(), Some("demand"));
    assert_eq!(ours.pid, None, "a stopped service has no process");
    assert!(
        ours.binary_path
            .as_deref()
            .is_some_and(|p| p.to_ascii_lowercase().contains("notepad.exe")),
        "{ours:?}"
    );
    let rpcss = find("RpcSs");
    assert!(
        ["auto", "demand", "boot", "system", "disabled"].contains(&rpcss.load_state.as_str()),
        "{rpcss:?}"
    );
    assert!(rpcss.description.is_some(), "{rpcss:?}");
    find("PlugPlay");

    drop(registered);
    assert!(
        !services()
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(&name)),
        "{name} is still listed after sc delete"
    );
}
