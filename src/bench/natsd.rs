//! Starts a real nats-server for tests and benchmarks: a random port, a
//! temporary store directory, `sync_interval: always`, stopped on drop (the way
//! nats.rs's own tests run their servers).
//!
//! The binary is found at run time, in order: `$LEDGER_NATS_SERVER`,
//! `.tools/venv/bin/nats-server` (installed by `scripts/nats-server`) in the
//! current directory or the nearest ancestor that has one, then
//! `nats-server` on PATH. Each must be >= 2.12. No path is fixed at build
//! time, so a release binary carries nothing of the machine that built it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct NatsServer {
    /// `None` while stopped.
    child: Option<Child>,
    url: String,
    store_dir: PathBuf,
    /// More configuration (authorization) kept for restarts.
    extra: String,
    port: Option<u16>,
    /// Holds the config and ports file, and the store unless one was given.
    _work: tempfile::TempDir,
}

fn version_ok(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    // Prints e.g. "nats-server: v2.15.1".
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text.trim().rsplit('v').next()?.to_string();
    let mut parts = version.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) >= (2, 12)).then_some(version)
}

/// Finds a nats-server >= 2.12.
pub fn binary() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("LEDGER_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(cwd) = std::env::current_dir() {
        let installed =
            cwd.ancestors().map(|dir| dir.join(".tools/venv/bin/nats-server")).find(|p| p.exists());
        candidates.extend(installed);
    }
    candidates.push(PathBuf::from("nats-server"));
    for candidate in &candidates {
        if version_ok(candidate).is_some() {
            return Ok(candidate.clone());
        }
    }
    bail!("no nats-server >= 2.12 found (tried {candidates:?}); run scripts/nats-server to install one")
}

impl NatsServer {
    /// A fresh server with a fresh temporary store.
    pub fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_configured("")
    }

    /// A fresh server whose config also holds `extra` (an `authorization`
    /// block, say).
    pub fn start_configured(extra: &str) -> anyhow::Result<NatsServer> {
        let work = tempfile::tempdir()?;
        let store = work.path().join("store");
        NatsServer::start_with(work, store, extra.to_string())
    }

    /// A server over an existing store directory (to restart one).
    pub fn start_on_store(store_dir: &Path) -> anyhow::Result<NatsServer> {
        NatsServer::start_with(tempfile::tempdir()?, store_dir.to_path_buf(), String::new())
    }

    /// With `LEDGER_TEST_PARTITIONS=N` in the environment (the test suite's
    /// partitioned run, `scripts/test`), a server on a fresh store without
    /// authorization starts with a ledger of N partitions already made, as
    /// `ledger init --partitions N` makes it, so every test and bench on it
    /// runs on a partitioned ledger.
    fn start_with(work: tempfile::TempDir, store_dir: PathBuf, extra: String) -> anyhow::Result<NatsServer> {
        let fresh = !store_dir.exists() && extra.is_empty();
        let mut server =
            NatsServer { child: None, url: String::new(), store_dir, extra, port: None, _work: work };
        server.spawn()?;
        let partitions: u32 =
            std::env::var("LEDGER_TEST_PARTITIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
        if fresh && partitions > 1 {
            let url = server.url().to_string();
            // Its own runtime on its own thread: callers may be inside one.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let options = crate::log::JetStreamOptions::new(&url);
                    crate::log::JetStreamLog::init(&options, partitions).await?;
                    anyhow::Ok(())
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("making the partitioned ledger panicked"))??;
        }
        Ok(server)
    }

    /// Starts the process: on a random port the first time, then on the
    /// same port (so clients reconnect to the URL they know).
    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = binary()?;
        let config = self._work.path().join("nats.conf");
        let ports = self._work.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports)?;
        let listen = match self.port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => "127.0.0.1:-1".to_string(),
        };
        // sync_interval: always makes every acknowledged write fsynced, the
        // setting durable deployments use and our figures are measured with.
        std::fs::write(
            &config,
            format!(
                "listen: \"{listen}\"\nports_file_dir: {ports:?}\n\
                 jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n{}\n",
                self.store_dir, self.extra
            ),
        )?;
        self.child = Some(
            Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?,
        );
        self.url = self.wait_for_port(&ports)?;
        self.port = self.url.rsplit(':').next().and_then(|p| p.parse().ok());
        Ok(())
    }

    /// Stops the server (SIGKILL) and starts it again on the same store and port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn wait_for_port(&mut self, ports: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("nats-server exited at start: {status}");
            }
            for entry in std::fs::read_dir(ports)? {
                let text = std::fs::read_to_string(entry?.path())?;
                let parsed: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => continue, // still being written
                };
                if let Some(url) = parsed["nats"][0].as_str() {
                    return Ok(url.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nats-server did not report its port within 20s")
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stops the server (SIGKILL: an unclean stop is the harder case).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
