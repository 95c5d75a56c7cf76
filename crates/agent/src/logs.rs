//! `muster-agent logs [-f] [-n N]`: the agent's log wherever it goes. Under systemd the agent
//! logs to the journal, so this is `journalctl -u muster-agent`; otherwise (daemonized, System V
//! init) it is the size-rotated file `[agent] log_file` with its copies `.1`, `.2`, ...
//! ([`crate::logging::RotatingFile`]), followed across rotations with `-f`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::LogsArgs;
use crate::config;

/// How often `-f` looks at the file. There is no inotify in the standard library, and a
/// person reading a log does not need better than a quarter of a second.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

pub fn main(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    if !args.file && journal_has_agent() {
        return journal(args);
    }
    let loaded = match config::load_or_exit(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let path = loaded.config.agent.log_file;
    let backups = loaded.config.agent.log_backup_count;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = print_file_log(&path, backups, args.lines, args.follow, &mut out);
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `logs | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "muster-agent: no log file {} (the agent writes it only when daemonized; under \
                 systemd see journalctl -u muster-agent)",
                path.display()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether the agent runs as a systemd unit here, so its lines are in the journal.
fn journal_has_agent() -> bool {
    if !Path::new("/run/systemd/system").is_dir() {
        return false;
    }
    Command::new("systemctl")
        .args([
            "show",
            "--property=LoadState",
            "--value",
            "muster-agent.service",
        ])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"loaded"))
}

fn journal(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let mut command = Command::new("journalctl");
    command
        .args(["--unit", "muster-agent.service", "--no-pager", "--lines"])
        .arg(args.lines.to_string());
    if args.follow {
        command.arg("--follow");
    }
    let status = command.status().context("running journalctl")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the last `lines` lines of the log (reaching into the rotated copies when the current
/// file holds fewer), then, with `follow`, what is written from then on.
pub fn print_file_log(
    path: &Path,
    backups: u32,
    lines: usize,
    follow: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    // The current file through the handle that is then followed, so no line written in
    // between is lost or printed twice.
    let mut file = File::open(path)?;
    let mut current = Vec::new();
    file.read_to_end(&mut current)?;
    let mut tail: Vec<Vec<u8>> = last_lines(&current, lines);
    // Then the rotated copies, newest first, while more lines are wanted.
    for n in 1..=backups {
        if tail.len() >= lines {
            break;
        }
        let text = match std::fs::read(backup_path(path, n)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let mut kept = last_lines(&text, lines - tail.len());
        kept.append(&mut tail);
        tail = kept;
    }
    for line in &tail {
        out.write_all(line)?;
    }
    out.flush()?;
    if follow {
        follow_file(path, file, out)?;
    }
    Ok(())
}

/// The last `n` lines of `text` (the last one may lack its newline).
fn last_lines(text: &[u8], n: usize) -> Vec<Vec<u8>> {
    let all: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    all[all.len() - n.min(all.len())..]
        .iter()
        .map(|line| line.to_vec())
        .collect()
}

/// Prints what is appended to `path` forever. A rotation (the path names another file) is
/// noticed by its inode: the rest of the old file is printed, then the new one from its start.
/// A truncation (logrotate's `copytruncate`) starts over at the beginning.
fn follow_file(path: &Path, file: File, out: &mut impl Write) -> io::Result<()> {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        copy_available(&mut reader, &mut line, out)?;
        std::thread::sleep(FOLLOW_POLL);
        let current = reader.get_ref().metadata()?;
        match std::fs::metadata(path) {
            Ok(named) if !same_file(&named, &current) => {
                // Rotated: finish the old file, then switch.
                copy_available(&mut reader, &mut line, out)?;
                if !line.is_empty() {
                    out.write_all(&line)?;
                    line.clear();
                }
                match File::open(path) {
                    Ok(new) => reader = BufReader::new(new),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(named) if named.len() < reader.stream_position()? => {
                reader.seek(SeekFrom::Start(0))?;
                line.clear();
            }
            _ => {}
        }
    }
}

/// Prints every whole line available; a partial last line waits in `line` for its end.
fn copy_available(
    reader: &mut BufReader<File>,
    line: &mut Vec<u8>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut wrote = false;
    loop {
        let n = reader.read_until(b'\n', line)?;
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        out.write_all(line)?;
        line.clear();
        wrote = true;
    }
    if wrote {
        out.flush()?;
    }
    Ok(())
}

fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Whether two metadata describe the same file (not merely the same name).
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.ino() == b.ino() && a.dev() == b.dev()
}

/// Whether two metadata describe the same file (not merely the same name).
#[cfg(windows)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::windows::fs::MetadataExt;
    a.creation_time() == b.creation_time()
}
