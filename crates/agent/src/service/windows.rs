//! The agent as a Windows service, registered with the Service Control Manager.
//!
//! Layout: the binary at `%ProgramFiles%\Muster\muster-agent.exe`; the configuration
//! (`agent.toml`, and a `config.env` if the installer puts one there), `state\` and `logs\`
//! under `%ProgramData%\Muster\`, whose DACL is SYSTEM and Administrators only (the state holds
//! the agent's token, the configuration the enrolment token). Both roots are read from the
//! environment, so `service install` run with another `ProgramData` installs there (the
//! service is then told its `--config` explicitly, as it always is).
//!
//! The service runs `muster-agent.exe run --service --config <agent.toml>` as LocalSystem,
//! starts automatically, and is restarted by the SCM after a failure (5 s, 30 s, 60 s; the
//! count resets after a day), also when it stops with an error exit code. `run --service`
//! enters the service dispatcher; the SCM's Stop and Shutdown controls set the agent's stop
//! `watch` (the one shutdown path, [`crate::run::Stop`]). A service has no console, so nothing
//! can pop up; the agent logs to `logs\agent.log` with size rotation.
//!
//! Every `unsafe` here is a windows-sys call for the DACL, or the `define_windows_service!`
//! entry point; each has a `// SAFETY:` line.
#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use crate::cli::{
    RunArgs, ServiceControlArgs, ServiceInstallArgs, ServiceStatusArgs, ServiceUninstallArgs,
};
use crate::config::DefaultPaths;

/// The service's name in the SCM (`sc query muster-agent`).
pub const SERVICE_NAME: &str = "muster-agent";
/// What the Services console shows.
pub const DISPLAY_NAME: &str = "Muster agent";
/// The service's description.
pub const DESCRIPTION: &str = "Muster endpoint agent: inventory, telemetry and safe remote \
     commands for this machine (configuration in %ProgramData%\\Muster\\agent.toml).";
/// The commented configuration template, written when there is no configuration.
pub const CONFIG_TEMPLATE: &str = include_str!("../../../../packaging/windows/agent.toml");
/// The DACL of `%ProgramData%\Muster` (inherited by everything below it): protected from the
/// parent's entries, full control for SYSTEM and the Administrators group only.
pub const DATA_DIR_SDDL: &str = "D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// `service status`: not installed.
const EXIT_NOT_INSTALLED: u8 = 4;
/// `service status`: installed, not running.
const EXIT_NOT_RUNNING: u8 = 3;

/// How long the SCM should wait for the agent to start: loading the configuration, the state
/// lock and the runtime (enrolment happens after `Running`).
const START_WAIT_HINT: Duration = Duration::from_secs(30);
/// How long stopping may take: running commands get `kill_grace` (default 10 s), work in
/// flight on the runtime 5 s more.
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;

/// Where the service's files live on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `%ProgramFiles%\Muster`.
    pub program_dir: PathBuf,
    /// `%ProgramFiles%\Muster\muster-agent.exe`.
    pub binary: PathBuf,
    /// `%ProgramData%\Muster`.
    pub data_dir: PathBuf,
    /// `%ProgramData%\Muster\agent.toml`.
    pub config: PathBuf,
    /// `%ProgramData%\Muster\state`.
    pub state_dir: PathBuf,
    /// `%ProgramData%\Muster\logs`.
    pub log_dir: PathBuf,
}

impl Layout {
    /// The layout from `%ProgramFiles%` and `%ProgramData%`.
    pub fn get() -> Layout {
        let program_files = std::env::var_os("ProgramFiles")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(r"C:\Program Files"), PathBuf::from);
        Layout::new(&program_files, &crate::config::program_data())
    }

    /// The layout below these two roots.
    pub fn new(program_files: &Path, program_data: &Path) -> Layout {
        let program_dir = program_files.join("Muster");
        let paths = DefaultPaths::windows(program_data);
        let data_dir = program_data.join("Muster");
        Layout {
            binary: program_dir.join("muster-agent.exe"),
            program_dir,
            log_dir: data_dir.join("logs"),
            data_dir,
            config: paths.config,
            state_dir: paths.state_dir,
        }
    }
}

/// The arguments the SCM starts the binary with.
pub fn launch_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--service".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]
}

fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .context("connecting to the Service Control Manager (administrator rights needed)")
}

fn winapi_code(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// Opens the service, `None` when it is not installed.
fn open(
    manager: &ServiceManager,
    access: ServiceAccess,
) -> anyhow::Result<Option<windows_service::service::Service>> {
    match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => Ok(Some(service)),
        Err(e) if winapi_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening service {SERVICE_NAME}")),
    }
}

/// Polls until the service is in `want` (or has stopped when starting), up to `timeout`.
fn wait_for(
    service: &windows_service::service::Service,
    want: ServiceState,
    timeout: Duration,
) -> anyhow::Result<ServiceStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = service.query_status().context("querying the service")?;
        if status.current_state == want {
            return Ok(status);
        }
        if want == ServiceState::Running && status.current_state == ServiceState::Stopped {
            bail!(
                "{SERVICE_NAME} stopped while starting (exit code {}); see its log in \
                 %ProgramData%\\Muster\\logs",
                exit_code_text(&status.exit_code)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{SERVICE_NAME} is {:?} after {} s, not {want:?}",
                status.current_state,
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn exit_code_text(code: &ServiceExitCode) -> String {
    match code {
        ServiceExitCode::Win32(n) => format!("win32 {n}"),
        ServiceExitCode::ServiceSpecific(n) => format!("{n}"),
    }
}

pub fn install(args: &ServiceInstallArgs) -> anyhow::Result<ExitCode> {
    if args.root.is_some() {
        bail!(
            "--root is for Unix; on Windows set ProgramFiles and ProgramData to install elsewhere"
        );
    }
    if args.sysv {
        bail!("--sysv is for Unix; on Windows the agent is a Service Control Manager service");
    }
    let layout = Layout::get();
    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let access = ServiceAccess::QUERY_STATUS
        | ServiceAccess::START
        | ServiceAccess::STOP
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::QUERY_CONFIG;
    let existing = open(&manager, access)?;
    // A running agent holds its binary open: stop it before the copy replaces the binary.
    if let Some(service) = &existing {
        stop_service(service, STOP_WAIT_HINT)?;
    }

    for dir in [&layout.data_dir, &layout.state_dir, &layout.log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match restrict_dir(&layout.data_dir) {
        Ok(()) => {}
        Err(e) if crate::service::running_under_wine() => {
            println!(
                "{}: ACL not set under Wine ({e})",
                layout.data_dir.display()
            );
        }
        Err(e) => {
            return Err(e).with_context(|| format!("restricting {}", layout.data_dir.display()));
        }
    }

    std::fs::create_dir_all(&layout.program_dir)
        .with_context(|| format!("creating {}", layout.program_dir.display()))?;
    let source = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    if !same_file(&source, &layout.binary) {
        std::fs::copy(&source, &layout.binary).with_context(|| {
            format!(
                "copying {} to {}",
                source.display(),
                layout.binary.display()
            )
        })?;
        println!("{}: installed", layout.binary.display());
    }

    let config_exists = layout.config.try_exists().unwrap_or(true);
    match &args.config {
        Some(given) if !config_exists || args.force => {
            std::fs::copy(given, &layout.config).with_context(|| {
                format!("copying {} to {}", given.display(), layout.config.display())
            })?;
            println!(
                "{}: installed from {}",
                layout.config.display(),
                given.display()
            );
        }
        Some(_) => println!(
            "{}: kept (exists; --force replaces it)",
            layout.config.display()
        ),
        None if !config_exists => {
            std::fs::write(&layout.config, CONFIG_TEMPLATE)
                .with_context(|| format!("writing {}", layout.config.display()))?;
            println!(
                "{}: template written; set [api] base_url, tenant_id and auth_token",
                layout.config.display()
            );
        }
        None => println!("{}: kept", layout.config.display()),
    }

    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: layout.binary.clone(),
        launch_arguments: launch_arguments(&layout.config),
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = match existing {
        Some(service) => {
            service
                .change_config(&info)
                .context("updating the service's configuration")?;
            println!("service {SERVICE_NAME}: updated");
            service
        }
        None => {
            let service = manager
                .create_service(&info, access)
                .with_context(|| format!("creating service {SERVICE_NAME}"))?;
            println!("service {SERVICE_NAME}: created (automatic start)");
            service
        }
    };
    service
        .set_description(DESCRIPTION)
        .context("setting the service's description")?;
    set_recovery(&service)?;

    if args.no_start {
        println!("not started (--no-start): muster-agent service start");
        return Ok(ExitCode::SUCCESS);
    }
    start_service(&service, START_WAIT_HINT * 2)?;
    Ok(ExitCode::SUCCESS)
}

/// Restart after every failure (a crash, or a stop with an error exit code).
fn set_recovery(service: &windows_service::service::Service) -> anyhow::Result<()> {
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    let actions = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(30), restart(60)]),
    };
    let result = service
        .update_failure_actions(actions)
        .and_then(|()| service.set_failure_actions_on_non_crash_failures(true));
    match result {
        Ok(()) => Ok(()),
        // Wine's SCM does not store recovery actions (ChangeServiceConfig2W answers
        // ERROR_INVALID_PARAMETER or not-supported); on Windows this is a failed install.
        Err(e) if crate::service::running_under_wine() => {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            println!(
                "recovery actions not set under Wine ({e}: {})",
                cause.unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => Err(e).context("setting the service's recovery actions"),
    }
}

fn start_service(
    service: &windows_service::service::Service,
    timeout: Duration,
) -> anyhow::Result<()> {
    match service.start::<&OsStr>(&[]) {
        Ok(()) => {}
        Err(e) if winapi_code(&e) == Some(ERROR_SERVICE_ALREADY_RUNNING) => {}
        Err(e) => return Err(e).context("starting the service"),
    }
    let status = wait_for(service, ServiceState::Running, timeout)?;
    match status.process_id {
        Some(pid) => println!("service {SERVICE_NAME}: running (pid {pid})"),
        None => println!("service {SERVICE_NAME}: running"),
    }
    Ok(())
}

fn stop_service(
    service: &windows_service::service::Service,
    timeout: Duration,
) -> anyhow::Result<()> {
    match service.stop() {
        Ok(_) => {}
        Err(e) if winapi_code(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => return Ok(()),
        Err(e) => return Err(e).context("stopping the service"),
    }
    wait_for(service, ServiceState::Stopped, timeout)?;
    println!("service {SERVICE_NAME}: stopped");
    Ok(())
}

pub fn uninstall(args: &ServiceUninstallArgs) -> anyhow::Result<ExitCode> {
    if args.root.is_some() {
        bail!("--root is for Unix");
    }
    let layout = Layout::get();
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    match open(&manager, access)? {
        Some(service) => {
            stop_service(&service, STOP_WAIT_HINT)?;
            service.delete().context("deleting the service")?;
            println!("service {SERVICE_NAME}: deleted");
        }
        None => println!("service {SERVICE_NAME}: not installed"),
    }
    let mut problems = Vec::new();
    let running_installed = std::env::current_exe()
        .map(|exe| same_file(&exe, &layout.binary))
        .unwrap_or(false);
    if running_installed {
        // Windows does not delete a running executable (the MSI's purge action runs this
        // very binary, and removes it itself afterwards).
        println!(
            "{}: kept (it is this running program; delete it after this command exits)",
            layout.binary.display()
        );
    } else {
        match std::fs::remove_file(&layout.binary) {
            Ok(()) => println!("{}: removed", layout.binary.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("removing {}: {e}", layout.binary.display())),
        }
        // Only if empty: an administrator's files there are not ours.
        let _ = std::fs::remove_dir(&layout.program_dir);
    }
    if args.purge {
        match std::fs::remove_dir_all(&layout.data_dir) {
            Ok(()) => println!("{}: removed", layout.data_dir.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("removing {}: {e}", layout.data_dir.display())),
        }
    } else if layout.data_dir.exists() {
        println!(
            "{}: kept (configuration, state, logs; --purge removes them)",
            layout.data_dir.display()
        );
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("removed, but: {}", problems.join("; "))
    }
}

pub fn status(args: &ServiceStatusArgs) -> anyhow::Result<ExitCode> {
    if args.root.is_some() {
        bail!("--root is for Unix");
    }
    let layout = Layout::get();
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let Some(service) = open(
        &manager,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?
    else {
        println!("service {SERVICE_NAME}: not installed");
        return Ok(ExitCode::from(EXIT_NOT_INSTALLED));
    };
    let config = service.query_config().context("querying the service")?;
    println!("service {SERVICE_NAME}: installed, {:?}", config.start_type);
    println!("binary: {}", config.executable_path.display());
    println!("configuration: {}", layout.config.display());
    let status = service.query_status().context("querying the service")?;
    match (status.current_state, status.process_id) {
        (ServiceState::Running, Some(pid)) => println!("state: Running (pid {pid})"),
        (state, _) => println!("state: {state:?}"),
    }
    Ok(if status.current_state == ServiceState::Running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    })
}

pub fn start(args: &ServiceControlArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let Some(service) = open(&manager, ServiceAccess::QUERY_STATUS | ServiceAccess::START)? else {
        println!("service {SERVICE_NAME}: not installed");
        return Ok(ExitCode::from(EXIT_NOT_INSTALLED));
    };
    start_service(&service, Duration::from_secs(args.timeout))?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop(args: &ServiceControlArgs) -> anyhow::Result<ExitCode> {
    let manager = manager(ServiceManagerAccess::CONNECT)?;
    let Some(service) = open(&manager, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)? else {
        println!("service {SERVICE_NAME}: not installed");
        return Ok(ExitCode::from(EXIT_NOT_INSTALLED));
    };
    stop_service(&service, Duration::from_secs(args.timeout))?;
    Ok(ExitCode::SUCCESS)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The service itself: `run --service`

/// The `run` arguments, handed from `main` to the service's main function, which the
/// dispatcher calls on its own thread with only the SCM's start parameters.
static RUN_ARGS: OnceLock<RunArgs> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// `run --service`: connects to the SCM and runs the agent as the service until it stops.
pub fn run_service(args: RunArgs) -> anyhow::Result<ExitCode> {
    let _ = RUN_ARGS.set(args);
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if winapi_code(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => bail!(
            "`run --service` is for the Service Control Manager; in a console use `run` \
             (`service start` starts the installed service)"
        ),
        Err(e) => Err(e).context("starting the service dispatcher"),
    }
}

fn service_main(_scm_arguments: Vec<OsString>) {
    let Some(args) = RUN_ARGS.get() else { return };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let handle = Arc::new(Mutex::new(None));
    let handler = {
        let stop_tx = Arc::clone(&stop_tx);
        let handle = Arc::clone(&handle);
        move |control| match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                if let Some(handle) = *handle.lock().unwrap_or_else(|e| e.into_inner()) {
                    report(handle, ServiceState::StopPending, 1, STOP_WAIT_HINT, 0);
                }
                let _ = stop_tx.send(true);
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let Ok(status_handle) = service_control_handler::register(SERVICE_NAME, handler) else {
        return;
    };
    *handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(status_handle);
    report(
        status_handle,
        ServiceState::StartPending,
        1,
        START_WAIT_HINT,
        0,
    );
    let result = crate::run::serve(args, crate::run::Stop::Channel(stop_rx), &mut || {
        report(status_handle, ServiceState::Running, 0, Duration::ZERO, 0);
    });
    let code = match result {
        Ok(code) => u32::from(code),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "muster-agent service failed");
            1
        }
    };
    report(
        status_handle,
        ServiceState::Stopped,
        0,
        Duration::ZERO,
        code,
    );
}

fn report(
    handle: service_control_handler::ServiceStatusHandle,
    state: ServiceState,
    checkpoint: u32,
    wait_hint: Duration,
    exit: u32,
) {
    let controls_accepted = match state {
        ServiceState::Running => ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        _ => ServiceControlAccept::empty(),
    };
    let _ = handle.set_service_status(ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(exit)
        },
        checkpoint,
        wait_hint,
        process_id: None,
    });
}

// ---------------------------------------------------------------------------------------------
// ACLs and Wine

/// Called by `run` for the state directory it creates: the token is in there. A directory
/// below `%ProgramData%\Muster` already inherits the installer's DACL; one elsewhere (a
/// configured `state_dir`) gets the same. A failure is logged, not fatal: the agent still
/// runs where the administrator chose to put its state.
pub fn restrict_state_dir(dir: &Path) {
    let data_dir = Layout::get().data_dir;
    if dir.starts_with(&data_dir) {
        return;
    }
    if let Err(e) = restrict_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot restrict the state directory");
    }
}

fn wide(s: &OsStr) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt as _;
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Sets `dir`'s DACL to [`DATA_DIR_SDDL`]: SYSTEM and Administrators only, not inherited from
/// the parent, inherited by everything below.
pub fn restrict_dir(dir: &Path) -> io::Result<()> {
    use windows_sys::Win32::Foundation::{LocalFree, WIN32_ERROR};
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1, SE_FILE_OBJECT,
        SetNamedSecurityInfoW,
    };
    use windows_sys::Win32::Security::{
        ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl,
        PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    };

    let sddl = wide(OsStr::new(DATA_DIR_SDDL));
    let path = wide(dir.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `sddl` is a NUL-terminated UTF-16 string; `sd` receives a LocalAlloc'd
    // descriptor we free below; the size out-pointer may be null.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut present = 0;
    let mut defaulted = 0;
    let mut dacl: *mut ACL = std::ptr::null_mut();
    // SAFETY: `sd` is the valid descriptor made above; the out-pointers are live locals.
    let ok = unsafe { GetSecurityDescriptorDacl(sd, &mut present, &mut dacl, &mut defaulted) };
    let result = if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `path` is NUL-terminated; `dacl` points into `sd`, alive until LocalFree
        // below; owner, group and SACL are not changed (null).
        let err: WIN32_ERROR = unsafe {
            SetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                dacl,
                std::ptr::null(),
            )
        };
        if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(err as i32))
        }
    };
    // SAFETY: `sd` came from ConvertStringSecurityDescriptorToSecurityDescriptorW, which says
    // to free it with LocalFree; nothing uses it after this.
    unsafe { LocalFree(sd) };
    result
}

/// `path`'s DACL as SDDL (`D:PAI(A;OICI;FA;;;SY)...`), to check what [`restrict_dir`] set.
pub fn dacl_sddl(path: &Path) -> io::Result<String> {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW,
        SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR};

    let path = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `path` is NUL-terminated; only the descriptor is asked for (the other
    // out-pointers are null, which the API allows); `sd` is freed with LocalFree below.
    let err = unsafe {
        GetNamedSecurityInfoW(
            path.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err as i32));
    }
    let mut text: *mut u16 = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: `sd` is the descriptor just returned; `text` receives a LocalAlloc'd string of
    // `len` UTF-16 units (with its NUL), freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            &mut len,
        )
    };
    let result = if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the API wrote `len` units at `text`, which stays allocated until freed.
        let units = unsafe { std::slice::from_raw_parts(text, len as usize) };
        let units = units.strip_suffix(&[0]).unwrap_or(units);
        Ok(String::from_utf16_lossy(units))
    };
    // SAFETY: both were allocated by the APIs above with LocalAlloc; neither is used after.
    unsafe {
        LocalFree(text.cast());
        LocalFree(sd);
    }
    result
}

/// Whether this process runs under Wine (ntdll exports `wine_get_version`), where some
/// Windows APIs are missing or stubbed (recovery actions, ACLs).
pub fn running_under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll = wide(OsStr::new("ntdll.dll"));
    // SAFETY: `ntdll` is NUL-terminated; ntdll is mapped into every process, and the handle
    // is not freed (GetModuleHandleW takes no reference).
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return false;
    }
    // SAFETY: `module` is ntdll's handle; the name is a NUL-terminated ANSI string.
    unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }.is_some()
}
