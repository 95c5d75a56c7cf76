//! The enrolment bundle (seed 000's `ITAM_Scanner_[tenant_id].zip`): one download per tenant
//! and platform, a `tar.gz` holding the agent binary, an `agent.toml` that enrols it and an
//! `install.sh` that installs it as a service.
//!
//! `GET /api/admin/bundle` (admin token) and the dashboard's `/bundle` form both call [`make`].
//! Each bundle carries a **new** enrolment token, made for it with the limits asked for
//! (single-use, an expiry), so a bundle that leaks can be revoked alone and a single-use one is
//! worthless once its agent has registered.
//!
//! The archive is streamed: a blocking task writes tar into gzip into a bounded channel
//! ([`CHANNEL_CHUNKS`] chunks of [`CHUNK_BYTES`]) that is the response body, so a download
//! holds a few hundred KiB of memory whatever the binary's size, and a client that goes away
//! stops the task. Everything that can fail for a reason the admin can fix (no binary for the
//! platform, no host to point the agent at, a bad limit) is checked before the first byte; a
//! read error half-way aborts the body, which the client sees as a truncated download.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::channel::{Channel, Sender};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::AppState;
use crate::admin::TokenLimits;
use crate::error::ApiError;
use crate::extract::{AdminCaller, ApiQuery};
use crate::token::TokenKind;

/// Longest platform name (`linux-x86_64`, `linux-aarch64`, ...): it is part of every path in
/// the archive, which ustar's 100-byte name field must hold.
pub const MAX_PLATFORM_LEN: usize = 32;

/// What the binaries in `[bundle] agent_dir` are called: `muster-agent-<platform>`.
pub const BINARY_PREFIX: &str = "muster-agent-";

/// Size of the chunks the archive is sent in.
const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks written ahead of the client: the memory one download holds.
const CHANNEL_CHUNKS: usize = 4;

/// The installer in every bundle (the contract with `muster-agent service install`): POSIX
/// sh, run from anywhere, as root unless `--root DIR` installs into a directory.
pub const INSTALL_SH: &str = r#"#!/bin/sh
# Installs the Muster agent of this bundle as a service:
#   sudo ./install.sh             systemd (or --sysv for System V init)
#   ./install.sh --root DIR       into DIR only, touching nothing else on this machine
# Every argument is passed on to `muster-agent service install` (see `--help`).
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
into_root=no
for arg in "$@"; do
  case $arg in
    --root|--root=*) into_root=yes ;;
  esac
done
if [ "$into_root" = no ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo $0), or give --root DIR to install into a directory" >&2
  exit 1
fi
exec "$here/muster-agent" service install --binary "$here/muster-agent" --config "$here/agent.toml" "$@"
"#;

/// The admin routes of the bundle, relative to `/api/admin`.
pub fn router() -> Router<AppState> {
    Router::new().route("/bundle", get(get_bundle))
}

/// What to put in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRequest {
    /// `linux-x86_64`: the binary is `[bundle] agent_dir/muster-agent-<platform>`.
    pub platform: String,
    /// The bundle's enrolment token registers one agent (an agent registering again with it
    /// is not a second use).
    pub single_use: bool,
    /// The bundle's enrolment token stops working this many seconds from now.
    pub expires_in_s: Option<u64>,
}

/// The platform this server runs on, the default one.
pub fn default_platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Whether `platform` may name a binary: 1 to [`MAX_PLATFORM_LEN`] of `[A-Za-z0-9._-]`, not
/// starting with `.` or `-` (no path can be made of it).
pub fn valid_platform(platform: &str) -> bool {
    (1..=MAX_PLATFORM_LEN).contains(&platform.len())
        && !platform.starts_with(['.', '-'])
        && platform
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The platforms `agent_dir` has a binary for, sorted (the dashboard's choice, and the 404's
/// hint). An unreadable directory has none.
pub fn platforms(agent_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(agent_dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let platform = name.strip_prefix(BINARY_PREFIX)?;
            valid_platform(platform).then(|| platform.to_owned())
        })
        .collect();
    found.sort();
    found
}

/// The query of `GET /api/admin/bundle`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BundleParams {
    /// The agent's platform, e.g. `linux-x86_64` (the default: the server's own). The binary
    /// is `muster-agent-<platform>` in `[bundle] agent_dir`.
    platform: Option<String>,
    /// `tar.gz` (the default and the only format offered).
    format: Option<String>,
    /// The bundle's enrolment token registers one agent only.
    single_use: Option<bool>,
    /// The bundle's enrolment token stops working this many seconds from now.
    expires_in_s: Option<u64>,
}

/// The enrolment bundle of the caller's tenant: a `tar.gz` named
/// `muster-agent-<tenant id>-<platform>.tar.gz` holding, in a directory of that name,
/// `muster-agent` (0755), `agent.toml` (0600: the server URL, the tenant, a new enrolment token
/// with the limits asked for, the tenant's command-signing key) and `install.sh` (0755).
#[utoipa::path(
    get, path = "/api/admin/bundle", tag = "admin",
    params(BundleParams),
    responses(
        (status = 200, description = "The archive (application/gzip), streamed", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, description = "A malformed query string", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "Bundles are not configured, or no binary for the platform", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad platform, format or expiry, or no host to point the agent at", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn get_bundle(
    caller: AdminCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<BundleParams>,
) -> Result<Response, ApiError> {
    match params.format.as_deref() {
        None | Some("tar.gz") => {}
        Some("zip") => {
            return Err(ApiError::Unprocessable(
                "`format=zip` is not offered; the bundle is a tar.gz".into(),
            ));
        }
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "`format` is `{other}`; the bundle is a tar.gz"
            )));
        }
    }
    let request = BundleRequest {
        platform: params.platform.unwrap_or_else(default_platform),
        single_use: params.single_use.unwrap_or(false),
        expires_in_s: params.expires_in_s,
    };
    make(&state, &caller.tenant_id, &headers, &request).await
}

/// Makes the tenant's bundle for `request` and answers it, streamed. `headers` give the
/// server's URL when `[server] public_url` is not set.
pub async fn make(
    state: &AppState,
    tenant_id: &str,
    headers: &HeaderMap,
    request: &BundleRequest,
) -> Result<Response, ApiError> {
    let platform = request.platform.trim();
    if !valid_platform(platform) {
        return Err(ApiError::Unprocessable(format!(
            "`platform` must be 1 to {MAX_PLATFORM_LEN} letters, digits, `.`, `_` or `-`, \
             like linux-x86_64"
        )));
    }
    let Some(agent_dir) = &state.bundle.agent_dir else {
        return Err(ApiError::NotFound(
            "enrolment bundles are not configured on this server ([bundle] agent_dir)".into(),
        ));
    };
    let (binary, binary_size) = open_binary(agent_dir, platform)?;
    let base_url = format!("{}/api", server_url(state, headers)?);
    let now = jiff::Timestamp::now().as_second();
    let expires_at = request
        .expires_in_s
        .map(|s| crate::admin_api::expiry_in(now, s))
        .transpose()?;
    let key = crate::commands::tenant_key(&state.store, tenant_id).await?;
    let limits = TokenLimits {
        expires_at,
        max_uses: request.single_use.then_some(1),
    };
    let name = format!("bundle {platform}");
    let (info, token) = crate::admin::create_token(
        &state.store,
        tenant_id,
        TokenKind::Enrol,
        Some(&name),
        limits,
        now,
    )
    .await?;
    tracing::info!(
        tenant_id = %tenant_id, token_id = %info.id, platform = %platform,
        single_use = request.single_use, expires_at = ?expires_at, "enrolment bundle made"
    );
    let config = agent_toml(&AgentConfig {
        base_url: &base_url,
        tenant_id,
        enrolment_token: token.expose(),
        signing_key: &key.public_key,
        single_use: request.single_use,
        expires_at,
    });
    let stem = format!("{BINARY_PREFIX}{tenant_id}-{platform}");
    let (sender, body) = Channel::<Bytes, io::Error>::new(CHANNEL_CHUNKS);
    let handle = tokio::runtime::Handle::current();
    let archive = Archive {
        directory: stem.clone(),
        agent_toml: config,
        binary,
        binary_size,
        mtime: now,
    };
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            sender: Some(sender),
            handle,
            buffer: Vec::with_capacity(CHUNK_BYTES),
        };
        let written = write_tar_gz(&archive, &mut out).and_then(|()| out.flush());
        if let Err(e) = written {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "writing an enrolment bundle failed");
            }
            if let Some(sender) = out.sender.take() {
                sender.abort(e);
            }
        }
    });
    let disposition = format!("attachment; filename=\"{stem}.tar.gz\"");
    let mut response = (StatusCode::OK, Body::new(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    // It holds a live enrolment token.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The agent binary of `platform`, opened, and its size (read from the open file, so a binary
/// replaced by a rename meanwhile does not matter).
fn open_binary(agent_dir: &Path, platform: &str) -> Result<(File, u64), ApiError> {
    let missing = || {
        let available = platforms(agent_dir);
        ApiError::NotFound(format!(
            "no agent binary for platform `{platform}` (`{BINARY_PREFIX}{platform}` in the \
             bundle directory); available: {}",
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        ))
    };
    let path = agent_dir.join(format!("{BINARY_PREFIX}{platform}"));
    // Only a regular file is opened (opening a FIFO would block).
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(missing());
    }
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(ApiError::Internal(format!("opening the agent binary: {e}"))),
    };
    let metadata = file
        .metadata()
        .map_err(|e| ApiError::Internal(format!("reading the agent binary: {e}")))?;
    if !metadata.is_file() {
        return Err(missing());
    }
    Ok((file, metadata.len()))
}

/// The server's URL as the agent should reach it: `[server] public_url`, else the scheme and
/// `Host` of this request (HTTPS when it came so, or a proxy says so).
fn server_url(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &state.bundle.public_url {
        return Ok(url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .filter(|a| !a.host().is_empty() && a.as_str() == a.host_and_port())
        .ok_or_else(|| {
            ApiError::Unprocessable(
                "the request has no usable Host to point the agent at; set [server] public_url"
                    .into(),
            )
        })?;
    let scheme = if crate::dashboard::session::came_over_https(headers) {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}"))
}

trait HostAndPort {
    fn host_and_port(&self) -> String;
}

impl HostAndPort for axum::http::uri::Authority {
    /// The authority without user info (which `Host` must not carry).
    fn host_and_port(&self) -> String {
        match self.port() {
            Some(port) => format!("{}:{port}", self.host()),
            None => self.host().to_owned(),
        }
    }
}

/// What `agent.toml` says.
#[derive(Debug)]
pub struct AgentConfig<'a> {
    /// The API root, `https://host/api`.
    pub base_url: &'a str,
    pub tenant_id: &'a str,
    pub enrolment_token: &'a str,
    /// The tenant's command-signing public key, base64.
    pub signing_key: &'a str,
    pub single_use: bool,
    pub expires_at: Option<i64>,
}

/// The bundle's `agent.toml`: only the keys the bundle decides, the agent's defaults for the
/// rest (docs/CONFIG.md). Serialized by the toml crate, so every value is quoted correctly.
pub fn agent_toml(config: &AgentConfig<'_>) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        api: Api<'a>,
        security: Security<'a>,
    }
    #[derive(Serialize)]
    struct Api<'a> {
        base_url: &'a str,
        tenant_id: &'a str,
        auth_token: &'a str,
    }
    #[derive(Serialize)]
    struct Security<'a> {
        command_signing_key: &'a str,
    }
    let body = toml::to_string(&File {
        api: Api {
            base_url: config.base_url,
            tenant_id: config.tenant_id,
            auth_token: config.enrolment_token,
        },
        security: Security {
            command_signing_key: config.signing_key,
        },
    })
    .expect("plain strings serialize");
    let uses = if config.single_use {
        "registers one agent"
    } else {
        "registers any number of agents"
    };
    let until = config
        .expires_at
        .and_then(|at| jiff::Timestamp::from_second(at).ok())
        .map_or(String::new(), |at| format!(" until {at}"));
    format!(
        "# Muster agent configuration, made by the server for this bundle.\n\
         # `auth_token` is an enrolment token: it {uses}{until}. Keep this file private (0600).\n\
         # Every other key has its default: see docs/CONFIG.md.\n\n{body}"
    )
}

/// What goes into one archive.
#[derive(Debug)]
struct Archive {
    /// The directory every file is in, also the archive's name.
    directory: String,
    agent_toml: String,
    binary: File,
    binary_size: u64,
    /// Unix seconds, every entry's time.
    mtime: i64,
}

/// Writes the archive as tar inside gzip to `out`.
fn write_tar_gz(archive: &Archive, out: &mut impl Write) -> io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let dir = &archive.directory;
    let mtime = archive.mtime;
    write_entry(
        &mut gz,
        &format!("{dir}/"),
        0o755,
        0,
        mtime,
        Kind::Directory,
    )?;
    write_file(
        &mut gz,
        &format!("{dir}/agent.toml"),
        0o600,
        mtime,
        archive.agent_toml.as_bytes(),
    )?;
    write_file(
        &mut gz,
        &format!("{dir}/install.sh"),
        0o755,
        mtime,
        INSTALL_SH.as_bytes(),
    )?;
    write_entry(
        &mut gz,
        &format!("{dir}/muster-agent"),
        0o755,
        archive.binary_size,
        mtime,
        Kind::File,
    )?;
    let copied = io::copy(&mut (&archive.binary).take(archive.binary_size), &mut gz)?;
    if copied != archive.binary_size {
        return Err(io::Error::other(
            "the agent binary became shorter while it was read",
        ));
    }
    pad(&mut gz, archive.binary_size)?;
    // The end of the archive: two zero blocks.
    gz.write_all(&[0; 2 * BLOCK])?;
    gz.finish()?;
    Ok(())
}

const BLOCK: usize = 512;

#[derive(Debug, Clone, Copy)]
enum Kind {
    File,
    Directory,
}

fn write_file(
    out: &mut impl Write,
    name: &str,
    mode: u32,
    mtime: i64,
    data: &[u8],
) -> io::Result<()> {
    write_entry(out, name, mode, data.len() as u64, mtime, Kind::File)?;
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

/// Zeros up to the next block after `size` bytes of content.
fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (size % BLOCK as u64) as usize;
    if rest != 0 {
        out.write_all(&[0; BLOCK][..BLOCK - rest])?;
    }
    Ok(())
}

/// One ustar header (POSIX.1-1988 `ustar` as GNU tar and bsdtar read it), owner root.
fn write_entry(
    out: &mut impl Write,
    name: &str,
    mode: u32,
    size: u64,
    mtime: i64,
    kind: Kind,
) -> io::Result<()> {
    out.write_all(&ustar_header(name, mode, size, mtime, kind)?)
}

fn ustar_header(
    name: &str,
    mode: u32,
    size: u64,
    mtime: i64,
    kind: Kind,
) -> io::Result<[u8; BLOCK]> {
    fn put(block: &mut [u8; BLOCK], at: usize, field: &[u8]) {
        block[at..at + field.len()].copy_from_slice(field);
    }
    /// An octal number in a field of `width` bytes, NUL-terminated.
    fn octal(block: &mut [u8; BLOCK], at: usize, width: usize, value: u64) -> io::Result<()> {
        let text = format!("{value:0w$o}\0", w = width - 1);
        if text.len() != width {
            return Err(io::Error::other("a tar field overflowed"));
        }
        put(block, at, text.as_bytes());
        Ok(())
    }
    if name.len() > 100 {
        return Err(io::Error::other(format!("tar entry name too long: {name}")));
    }
    let mut block = [0u8; BLOCK];
    put(&mut block, 0, name.as_bytes());
    octal(&mut block, 100, 8, u64::from(mode))?;
    octal(&mut block, 108, 8, 0)?; // uid
    octal(&mut block, 116, 8, 0)?; // gid
    octal(&mut block, 124, 12, size)?;
    octal(&mut block, 136, 12, u64::try_from(mtime).unwrap_or(0))?;
    block[156] = match kind {
        Kind::File => b'0',
        Kind::Directory => b'5',
    };
    put(&mut block, 257, b"ustar\0");
    put(&mut block, 263, b"00");
    put(&mut block, 265, b"root");
    put(&mut block, 297, b"root");
    // The checksum is the sum of the header's bytes with its own field read as spaces.
    put(&mut block, 148, b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(&mut block, 148, format!("{sum:06o}\0 ").as_bytes());
    Ok(block)
}

/// The response body's end of the channel, fed from the blocking task in chunks.
struct ChannelWriter {
    /// `None` once aborted.
    sender: Option<Sender<Bytes, io::Error>>,
    handle: tokio::runtime::Handle,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        // Waits while the client is slow: the channel holds only `CHANNEL_CHUNKS`.
        self.handle
            .block_on(sender.send_data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buffer.len();
        let taken = data.len().min(room);
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_names_not_paths() {
        for good in ["linux-x86_64", "linux-aarch64", "linux-armv7.hf", "x"] {
            assert!(valid_platform(good), "{good}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "linux/x86_64",
            ".hidden",
            "-rf",
            "linux x86",
            "linux-x86_64\n",
            &"a".repeat(MAX_PLATFORM_LEN + 1),
        ] {
            assert!(!valid_platform(bad), "{bad:?}");
        }
    }

    #[test]
    fn ustar_headers_carry_their_checksum() {
        let block = ustar_header("a/b.txt", 0o600, 1234, 1_700_000_000, Kind::File).unwrap();
        assert_eq!(&block[..7], b"a/b.txt");
        assert_eq!(&block[100..108], b"0000600\0");
        assert_eq!(&block[124..136], b"00000002322\0");
        assert_eq!(block[156], b'0');
        let stored =
            u32::from_str_radix(std::str::from_utf8(&block[148..154]).unwrap(), 8).unwrap();
        let mut spaced = block;
        spaced[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, spaced.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert!(ustar_header(&"n".repeat(101), 0o644, 0, 0, Kind::File).is_err());
    }

    #[test]
    fn agent_toml_quotes_what_it_is_given() {
        let text = agent_toml(&AgentConfig {
            base_url: "https://muster.example/api",
            tenant_id: "t\"1",
            enrolment_token: "mst_enrol_x",
            signing_key: "a2V5",
            single_use: true,
            expires_at: Some(1_800_000_000),
        });
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["api"]["tenant_id"].as_str(), Some("t\"1"));
        assert_eq!(
            parsed["api"]["base_url"].as_str(),
            Some("https://muster.example/api")
        );
        assert_eq!(
            parsed["security"]["command_signing_key"].as_str(),
            Some("a2V5")
        );
        assert!(
            text.contains("registers one agent until 2027-01-15T08:00:00Z"),
            "{text}"
        );
    }
}
