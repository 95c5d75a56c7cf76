//! Windows: a command's process tree is a Job Object.
//!
//! The command's process is created suspended ([`CREATION_FLAGS`]), assigned to a new job and
//! only then resumed ([`bind_and_resume`]): every process it starts is created inside the job
//! (a job's processes cannot leave it unless the job allows breakaway, which this one does
//! not), so [`Job::stop`] reaches the whole tree, however deep and whatever became of the
//! parents in between. The job is created with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`: its only
//! handle is the agent's, so if the agent dies (crash, `taskkill /F`, a service killed by the
//! SCM) Windows closes it and kills every process of every running command. That is the
//! after-a-crash recovery on Windows; the `/proc` walk Unix needs at the next start has nothing
//! left to do. A command whose main process ends by itself has its job released
//! ([`Job::release`]) first: what it left running goes on, as it does on Unix.
//!
//! Invariant: only this module calls the Job Object and toolhelp APIs; every `unsafe` block
//! here says why it is sound.

// The Win32 calls are FFI; each block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE, STILL_ACTIVE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NO_WINDOW, CREATE_SUSPENDED, GetExitCodeProcess, OpenProcess, OpenThread,
    PROCESS_QUERY_LIMITED_INFORMATION, ResumeThread, THREAD_SUSPEND_RESUME,
};

/// How a command's process is created: suspended (it is resumed once in its job) and with no
/// console window (the agent is a service; nothing it runs may pop a window up).
pub const CREATION_FLAGS: u32 = CREATE_SUSPENDED | CREATE_NO_WINDOW;

/// The exit code of the processes a stop terminates (`ERROR_PROCESS_ABORTED`).
const TERMINATED: u32 = 1067;

/// An owned handle, closed when dropped.
#[derive(Debug)]
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the API that created it and is closed once,
        // here.
        unsafe { CloseHandle(self.0) };
    }
}

/// A Job Object holding one command's process tree (see the module docs).
#[derive(Debug)]
pub struct Job(Owned);

// SAFETY: a job handle is a kernel object handle: any thread may use or close it.
unsafe impl Send for Job {}
// SAFETY: as above; the job APIs are thread-safe.
unsafe impl Sync for Job {}

impl Job {
    /// A new unnamed job that kills its processes when its last handle closes.
    pub fn new() -> io::Result<Job> {
        // SAFETY: null security attributes (a handle children do not inherit) and no name.
        let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        let job = Job(Owned(handle));
        job.kill_on_close(true)?;
        Ok(job)
    }

    fn kill_on_close(&self, on: bool) -> io::Result<()> {
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is valid (no limits).
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        if on {
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        }
        // SAFETY: `info` is the structure this information class names, with its size.
        let ok = unsafe {
            SetInformationJobObject(
                self.0.0,
                JobObjectExtendedLimitInformation,
                (&raw const info).cast::<c_void>(),
                size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Puts the process behind `process` (a handle with `PROCESS_SET_QUOTA` and
    /// `PROCESS_TERMINATE`, as `CreateProcess` returns) in the job.
    fn assign(&self, process: HANDLE) -> io::Result<()> {
        // SAFETY: both handles are open for the duration of the call.
        if unsafe { AssignProcessToJobObject(self.0.0, process) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// How many processes of the job are running.
    pub fn active_processes(&self) -> io::Result<u32> {
        // SAFETY: an all-zero accounting structure is valid; the call fills it.
        let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is the structure this information class names, with its size.
        let ok = unsafe {
            QueryInformationJobObject(
                self.0.0,
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast::<c_void>(),
                size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.ActiveProcesses)
    }

    /// Terminates every process of the job.
    pub fn terminate(&self) -> io::Result<()> {
        // SAFETY: the job handle is open.
        if unsafe { TerminateJobObject(self.0.0, TERMINATED) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A timeout or stop: up to `grace` for the tree to end by itself, then the whole job is
    /// terminated. Console programs have no SIGTERM, and CTRL_BREAK reaches only processes
    /// that share the sender's console, which a service's windowless children do not: the
    /// grace is time, not a request. Returns whether the job had to be terminated.
    pub async fn stop(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if self.active_processes().is_ok_and(|n| n == 0) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = self.terminate() {
            tracing::error!(error = %e, "cannot terminate a command's job object");
        }
        // Termination is asynchronous: wait (briefly) until the job is empty.
        for _ in 0..100 {
            if self.active_processes().is_ok_and(|n| n == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Closes the job without killing what is left in it.
    pub fn release(self) {
        if let Err(e) = self.kill_on_close(false) {
            tracing::warn!(error = %e, "cannot lift kill-on-close from a command's job");
        }
    }
}

/// Puts the suspended `child` (created with [`CREATION_FLAGS`]) in a new job and resumes it.
pub fn bind_and_resume(child: &tokio::process::Child) -> io::Result<Job> {
    let (Some(handle), Some(pid)) = (child.raw_handle(), child.id()) else {
        return Err(io::Error::other("the process has already been waited for"));
    };
    let job = Job::new()?;
    job.assign(handle as HANDLE)?;
    resume(pid)?;
    Ok(job)
}

/// Resumes every thread of process `pid` (a process created suspended has one).
fn resume(pid: u32) -> io::Result<()> {
    let snapshot = snapshot(TH32CS_SNAPTHREAD)?;
    // SAFETY: an all-zero THREADENTRY32 is valid once dwSize is set.
    let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
    entry.dwSize = size_of::<THREADENTRY32>() as u32;
    let mut resumed = 0;
    // SAFETY: the snapshot handle is open and `entry` has its size set.
    let mut more = unsafe { Thread32First(snapshot.0, &raw mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: a plain open by id; the handle is closed by `Owned`.
            let thread = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            if thread.is_null() {
                return Err(io::Error::last_os_error());
            }
            let thread = Owned(thread);
            // SAFETY: the thread handle is open with THREAD_SUSPEND_RESUME.
            if unsafe { ResumeThread(thread.0) } == u32::MAX {
                return Err(io::Error::last_os_error());
            }
            resumed += 1;
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot.0, &raw mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other(format!(
            "no thread of process {pid} found"
        )));
    }
    Ok(())
}

fn snapshot(what: u32) -> io::Result<Owned> {
    // SAFETY: a system-wide snapshot; no pointer arguments.
    let handle = unsafe { CreateToolhelp32Snapshot(what, 0) };
    if handle == INVALID_HANDLE_VALUE || handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Owned(handle))
}

/// Every process now, as (pid, parent pid).
pub fn processes() -> io::Result<Vec<(u32, u32)>> {
    let snapshot = snapshot(TH32CS_SNAPPROCESS)?;
    // SAFETY: an all-zero PROCESSENTRY32W is valid once dwSize is set.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = size_of::<PROCESSENTRY32W>() as u32;
    let mut all = Vec::new();
    // SAFETY: the snapshot handle is open and `entry` has its size set.
    let mut more = unsafe { Process32FirstW(snapshot.0, &raw mut entry) } != 0;
    while more {
        all.push((entry.th32ProcessID, entry.th32ParentProcessID));
        // SAFETY: as for Process32FirstW.
        more = unsafe { Process32NextW(snapshot.0, &raw mut entry) } != 0;
    }
    Ok(all)
}

/// The live descendants of `root` (a parent pid names a process only while it runs; a
/// descendant whose parent is gone is not found: tests look while the tree is whole).
pub fn descendants(root: u32) -> io::Result<Vec<u32>> {
    let all = processes()?;
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &all {
            if *ppid == parent && *pid != parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    Ok(found)
}

/// Whether process `pid` is running.
pub fn alive(pid: u32) -> bool {
    // SAFETY: a plain open by id; the handle is closed by `Owned`.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        return false;
    }
    let handle = Owned(handle);
    let mut code = 0u32;
    // SAFETY: the handle is open with PROCESS_QUERY_LIMITED_INFORMATION.
    let ok = unsafe { GetExitCodeProcess(handle.0, &raw mut code) };
    ok != 0 && code == STILL_ACTIVE as u32
}
