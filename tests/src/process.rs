//! Server processes started by a test: spawned with their output captured to
//! a log file, waited on until an HTTP endpoint answers, signalled, measured
//! (resident memory), killed on drop.

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server gets to answer its readiness endpoint after spawning.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1, as the kernel hands it out at this moment.
///
/// The port is released before returning, so another process could take it
/// in between; starters retry with a fresh port when the bind fails.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

/// Why a server did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// The process exited before answering; its log mentions a port clash.
    AddrInUse(String),
    /// Anything else: the process exited, or never answered in time.
    Failed(String),
}

impl StartError {
    /// This error with `context` (a config, say) after a failure's message;
    /// a port clash stays as it is, to be retried.
    pub fn with_context(self, context: impl FnOnce() -> String) -> StartError {
        match self {
            StartError::Failed(msg) => StartError::Failed(format!("{msg}\n{}", context())),
            clash => clash,
        }
    }
}

/// How [`start_until_bound`] retries a port clash.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// A first start, on a fresh free port each try: 5 tries, at once.
    FreshPort,
    /// A restart on the old port, which the killed listener may hold a
    /// moment longer: 20 tries, 300 ms apart.
    SamePort,
}

/// Starts the server `what` with `spawn`, which spawns it (on a fresh free
/// port, or on its old one, as `retry` says) and waits until it answers.
/// A port clash is tried again; any other failure panics at once with the
/// reason, as does a clash that outlasts the tries.
pub fn start_until_bound<T>(
    what: &str,
    retry: Retry,
    mut spawn: impl FnMut() -> Result<T, StartError>,
) -> T {
    let (tries, pause, verb) = match retry {
        Retry::FreshPort => (5, Duration::ZERO, "start"),
        Retry::SamePort => (20, Duration::from_millis(300), "restart"),
    };
    let mut last_error = String::new();
    for _ in 0..tries {
        match spawn() {
            Ok(started) => return started,
            Err(StartError::AddrInUse(msg)) => {
                last_error = msg;
                thread::sleep(pause);
            }
            Err(StartError::Failed(msg)) => panic!("{what} did not {verb}: {msg}"),
        }
    }
    panic!("{what} did not {verb}: its port stayed taken: {last_error}");
}

/// A spawned child whose stdout and stderr are appended to a log file.
/// Dropping it kills the process (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawn `cmd` with both output streams appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> ServerProcess {
        let out = open_append(log);
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {:?}: {e}", cmd.get_program()));
        ServerProcess {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The operating-system process id, while the process runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file both output streams go to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has logged so far (lossy UTF-8).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Poll `url` until it answers with `expect_status`, the process exits, or
    /// [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self, url: &str, expect_status: u16) -> Result<(), StartError> {
        let agent = crate::http::agent_with_timeout(Duration::from_secs(2));
        self.wait_ready_via(&agent, url, expect_status)
    }

    /// [`wait_ready`](Self::wait_ready) with `agent`'s requests (one that
    /// trusts a test CA, for an HTTPS server).
    pub fn wait_ready_via(
        &mut self,
        agent: &ureq::Agent,
        url: &str,
        expect_status: u16,
    ) -> Result<(), StartError> {
        self.wait_ready_with(url, expect_status, || {
            agent
                .get(url)
                .call()
                .map(|resp| resp.status().as_u16())
                .map_err(|e| e.to_string())
        })
    }

    /// Call `probe` until it answers `expect_status`, the process exits, or
    /// [`START_TIMEOUT`] passes. `what` names the probe in errors; the probe
    /// returns a status code, or why it got none.
    pub fn wait_ready_with(
        &mut self,
        what: &str,
        expect_status: u16,
        mut probe: impl FnMut() -> Result<u16, String>,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = self.log();
                let msg = format!("process exited with {status} before {what} answered");
                let lower = log.to_lowercase();
                if lower.contains("address already in use")
                    || lower.contains("addrinuse")
                    || lower.contains("port is already in use")
                {
                    return Err(StartError::AddrInUse(format!("{msg}\n--- log ---\n{log}")));
                }
                return Err(StartError::Failed(format!("{msg}\n--- log ---\n{log}")));
            }
            match probe() {
                // Another process could answer on a port this one failed to
                // bind: it must still be running a moment later.
                Ok(status) if status == expect_status => {
                    thread::sleep(Duration::from_millis(100));
                    if self.is_running() {
                        return Ok(());
                    }
                    continue; // the exit is reported at the top of the loop
                }
                Ok(status) => last = format!("status {status}"),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::Failed(format!(
                    "{what} did not answer {expect_status} within {START_TIMEOUT:?} (last: {last})\n--- log ---\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send the signal `name` (`TERM`, `INT`, `STOP`, ...) with `kill -s`.
    /// Panics when the process is gone or `kill` fails.
    pub fn signal(&self, name: &str) {
        let pid = self.id().expect("signal a process that runs");
        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid} failed: {status}");
    }

    /// Wait up to `timeout` for the process to exit and return how it
    /// exited (reaping it), or `None` when it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the process with SIGKILL and reap it. Does nothing if it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for ServerProcess {
    /// Kills the process; when a test is failing, prints the end of its log,
    /// which is often what says why.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(LOG_TAIL_LINES).collect();
            eprintln!(
                "--- {} (last lines)\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Lines of a server's log printed when a test using it fails.
const LOG_TAIL_LINES: usize = 40;

fn open_append(path: &Path) -> File {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create log directory");
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// The content of a log file, lossily decoded; empty if it cannot be read.
pub fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/PID/status`), or `None` when it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
