//! A private `redis-server` child process: what `taskherd serve` starts when
//! no `REDIS_URL` is given, and what tests and the benchmark run against.
//! It listens on 127.0.0.1 on a free port (never the machine's 6379), keeps
//! its data in its own folder with AOF on, uses `noeviction`, and keeps
//! task hashes compact (`hash-max-listpack-value 1024`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A running redis-server child; killed when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Exclusive lock on the data folder: one live node per folder. The OS
    /// releases it when the node dies, however it dies.
    lock: Option<std::fs::File>,
}

const LOCK_FILE: &str = "taskherd.lock";
const PORT_FILE: &str = "taskherd-redis.port";

/// Takes the folder's lock and stops a redis-server that a killed node left
/// running on it (its port is in the port file), so two servers never share
/// one AOF.
fn claim_dir(dir: &Path) -> Result<std::fs::File> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    if lock.try_lock().is_err() {
        return Err(Error::Config(format!(
            "{} is in use by another taskherd node",
            dir.display()
        )));
    }
    if let Some(port) = std::fs::read_to_string(dir.join(PORT_FILE))
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        && serves_dir(port, dir)
    {
        tracing::warn!(
            port,
            "stopping a redis-server left running by a previous node"
        );
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"SHUTDOWN\r\n");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while ping(port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(lock)
}

/// The install hint shown when redis-server is missing.
pub const INSTALL_HINT: &str = "redis-server was not found on PATH. Install it (Debian/Ubuntu: \
     `apt-get install -y redis-server`) or point REDIS_URL at a running Redis.";

fn find_redis_server() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Config(INSTALL_HINT.into()))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Sends one inline command to the Redis on 127.0.0.1:`port` and returns the
/// start of its reply (None when nothing answers).
fn ask(port: u16, command: &[u8]) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(command).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn ping(port: u16) -> bool {
    ask(port, b"PING\r\n").is_some_and(|reply| reply.starts_with("+PONG"))
}

/// Whether the Redis on `port` keeps its data in `dir` (it is ours).
fn serves_dir(port: u16, dir: &Path) -> bool {
    ask(port, b"CONFIG GET dir\r\n")
        .is_some_and(|reply| reply.lines().any(|line| Path::new(line.trim()) == dir))
}

impl LocalRedis {
    /// Starts redis-server on a free port with its data in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_on(dir, free_port()?) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("redis-server did not start".into())))
    }

    /// Starts redis-server on `port` with its data (AOF) in `dir`; waits
    /// until it answers PING (loading an existing AOF included).
    pub fn start_on(dir: &Path, port: u16) -> Result<Self> {
        Self::launch(dir, port, &[], ping)
    }

    /// [`LocalRedis::start_on`] with `extra` arguments after the usual ones
    /// (a later argument wins: `--appendfsync always`, say).
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        Self::launch(dir, port, extra, ping)
    }

    /// Starts redis-server on `port` as [`LocalRedis::start_on`] does, with
    /// `extra` arguments after the usual ones, and returns as soon as it
    /// answers at all: a `LOADING` error while it replays its data counts
    /// (for tests of what a node does meanwhile).
    pub fn start_answering_on(dir: &Path, port: u16, extra: &[&str]) -> Result<Self> {
        Self::launch(dir, port, extra, |port| ask(port, b"PING\r\n").is_some())
    }

    fn launch(dir: &Path, port: u16, extra: &[&str], answers: fn(u16) -> bool) -> Result<Self> {
        let binary = find_redis_server()?;
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let lock = claim_dir(&dir)?;
        let mut command = Command::new(binary);
        // Its own process group: a terminal's Ctrl-C reaches the node, which
        // drains and then stops Redis, instead of killing Redis mid-drain.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
            // Task hashes carry inputData (often > 64 bytes): keeping them in
            // listpack encoding saves about a third of the memory per task.
            .args(["--hash-max-listpack-value", "1024"])
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers(port) {
                std::fs::write(dir.join(PORT_FILE), port.to_string())?;
                return Ok(Self {
                    child: Some(child),
                    port,
                    dir,
                    lock: Some(lock),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Config(format!(
                    "redis-server exited at start ({status}); see {}",
                    dir.join("redis.log").display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(Error::Config(
                    "redis-server did not answer within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Clean stop: SHUTDOWN (flushes the AOF), then wait for the process.
    pub fn stop(&mut self) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.write_all(b"SHUTDOWN\r\n");
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.lock = None;
    }

    /// Hard stop: SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.lock = None;
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
