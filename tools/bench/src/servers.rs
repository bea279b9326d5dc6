//! Starting and stopping the brokers under test: imago, redis-server and beanstalkd, each on
//! 127.0.0.1 with its data in a fresh directory under the data root, removed when it stops.

use crate::sys;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Imago,
    Redis,
    Beanstalkd,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        match s {
            "imago" => Ok(Target::Imago),
            "redis" => Ok(Target::Redis),
            "beanstalkd" | "beanstalk" => Ok(Target::Beanstalkd),
            _ => Err(format!("--target {s}: must be imago, redis or beanstalkd")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Target::Imago => "imago",
            Target::Redis => "redis",
            Target::Beanstalkd => "beanstalkd",
        }
    }
}

/// How every broker is started: binaries, data root, and the durability mode.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub imago_bin: PathBuf,
    pub redis_bin: PathBuf,
    pub beanstalkd_bin: PathBuf,
    pub data_root: PathBuf,
    pub keep_data: bool,
    /// imago `--flush sync`, Redis `appendfsync always`, beanstalkd `-f0`; otherwise imago
    /// async, Redis `appendfsync everysec`, beanstalkd `-f <beanstalkd_lazy_fsync_ms>`.
    pub sync: bool,
    pub beanstalkd_lazy_fsync_ms: u64,
    /// Extra imago flags (`--imago-arg "--segment-bytes 67108864"`).
    pub imago_args: Vec<String>,
    /// Connect to a running imago instead of starting one (loopback only; no CPU figures
    /// unless its pid is given).
    pub imago_addr: Option<SocketAddr>,
    pub imago_pid: Option<u32>,
}

impl ServerOpts {
    pub fn mode_name(&self, t: Target) -> String {
        match (t, self.sync) {
            (Target::Imago, false) => "async".into(),
            (Target::Imago, true) => "sync".into(),
            (Target::Redis, false) => "appendfsync everysec".into(),
            (Target::Redis, true) => "appendfsync always".into(),
            (Target::Beanstalkd, false) => format!("-b -f {}", self.beanstalkd_lazy_fsync_ms),
            (Target::Beanstalkd, true) => "-b -f0".into(),
        }
    }
}

/// Per-start settings that depend on the run.
#[derive(Clone, Debug, Default)]
pub struct StartOpts {
    /// imago: partitions of auto-created topics.
    pub partitions: u32,
    /// beanstalkd: largest job.
    pub max_body: usize,
}

pub struct Server {
    pub target: Target,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    pub dir: PathBuf,
    child: Option<Child>,
    keep: bool,
    /// imago's stdout, kept open so a later line cannot hit a closed pipe.
    _stdout: Option<std::process::ChildStdout>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn fresh_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

pub fn check_loopback(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("{addr}: only loopback addresses are allowed"))
    }
}

impl Server {
    pub fn start(target: Target, o: &ServerOpts, s: &StartOpts) -> Result<Server, String> {
        match target {
            Target::Imago => Server::start_imago(o, s),
            Target::Redis => Server::start_redis(o),
            Target::Beanstalkd => Server::start_beanstalkd(o, s),
        }
    }

    fn start_imago(o: &ServerOpts, s: &StartOpts) -> Result<Server, String> {
        if let Some(addr) = o.imago_addr {
            check_loopback(&addr)?;
            return Ok(Server {
                target: Target::Imago,
                addr,
                pid: o.imago_pid,
                dir: PathBuf::new(),
                child: None,
                keep: true,
                _stdout: None,
            });
        }
        let dir = fresh_dir(&o.data_root, "imago")?;
        Server::spawn_imago(o, s, dir)
    }

    /// Stops this broker (a clean shutdown), runs `between` on its data directory, and starts
    /// it again on the same data: what a restart after an accumulation looks like.
    pub fn restart_imago(
        &mut self,
        o: &ServerOpts,
        s: &StartOpts,
        between: impl FnOnce(&Path),
    ) -> Result<(), String> {
        if self.target != Target::Imago || self.child.is_none() {
            return Err("only a broker this tool started can be restarted".into());
        }
        self.stop_child();
        between(&self.dir);
        let keep = self.keep;
        self.keep = true; // the old handle must not delete the directory the new one uses
        let next = Server::spawn_imago(o, s, self.dir.clone())?;
        *self = next;
        self.keep = keep;
        Ok(())
    }

    /// Starts imago on `dir` (its log there, its data in `dir/data`).
    fn spawn_imago(o: &ServerOpts, s: &StartOpts, dir: PathBuf) -> Result<Server, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .map_err(|e| e.to_string())?;
        let data = dir.join("data");
        let mut cmd = Command::new(&o.imago_bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data)
            .arg("--flush")
            .arg(if o.sync { "sync" } else { "async" })
            .arg("--default-partitions")
            .arg(s.partitions.max(1).to_string());
        for a in &o.imago_args {
            cmd.args(a.split_whitespace());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "start {}: {e} (build it: cargo build --release --bin imago)",
                o.imago_bin.display()
            )
        })?;
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        // Read the first line ("imago <version> listening on <ip:port>") with a bound.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match stdout.read(&mut byte) {
                    Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
                    _ => break,
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            stdout
        });
        let mut srv = Server {
            target: Target::Imago,
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: Some(pid),
            dir: dir.clone(),
            child: Some(child),
            keep: o.keep_data,
            _stdout: None,
        };
        let line = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            format!(
                "imago did not print its listening line in 60 s; see {}",
                dir.join("broker.log").display()
            )
        })?;
        srv._stdout = reader.join().ok();
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
                format!("imago: unexpected first line '{line}'; log: {log}")
            })?;
        check_loopback(&addr)?;
        srv.addr = addr;
        Ok(srv)
    }

    fn start_redis(o: &ServerOpts) -> Result<Server, String> {
        let dir = fresh_dir(&o.data_root, "redis")?;
        let port = free_port()?;
        let mut cmd = Command::new(&o.redis_bin);
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&dir)
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg(if o.sync { "always" } else { "everysec" })
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("yes")
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        Server::launch(o, Target::Redis, cmd, port, dir, |s| {
            s.write_all(b"PING\r\n").ok()?;
            let mut b = [0u8; 7];
            s.read_exact(&mut b).ok()?;
            (&b == b"+PONG\r\n").then_some(())
        })
    }

    fn start_beanstalkd(o: &ServerOpts, s: &StartOpts) -> Result<Server, String> {
        let dir = fresh_dir(&o.data_root, "beanstalkd")?;
        let port = free_port()?;
        let mut cmd = Command::new(&o.beanstalkd_bin);
        cmd.arg("-l")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-b")
            .arg(&dir);
        if o.sync {
            cmd.arg("-f0");
        } else {
            cmd.arg("-f").arg(o.beanstalkd_lazy_fsync_ms.to_string());
        }
        cmd.arg("-z").arg(s.max_body.max(65535).to_string());
        Server::launch(o, Target::Beanstalkd, cmd, port, dir, |s| {
            s.write_all(b"list-tubes\r\n").ok()?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            line.starts_with("OK").then_some(())
        })
    }

    /// Spawns a peer (`cmd`, listening on 127.0.0.1:`port`, data in `dir`) and waits until
    /// `probe` gets its answer.
    fn launch(
        o: &ServerOpts,
        target: Target,
        mut cmd: Command,
        port: u16,
        dir: PathBuf,
        probe: impl Fn(&mut TcpStream) -> Option<()>,
    ) -> Result<Server, String> {
        let (bin, package) = match target {
            Target::Redis => (&o.redis_bin, "redis-server"),
            _ => (&o.beanstalkd_bin, "beanstalkd"),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!(
                "start {}: {e} (apt-get install -y {package})",
                bin.display()
            )
        })?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let srv = Server {
            target,
            addr,
            pid: Some(child.id()),
            dir,
            child: Some(child),
            keep: o.keep_data,
            _stdout: None,
        };
        srv.wait_ready(probe)?;
        Ok(srv)
    }

    fn wait_ready(&self, probe: impl Fn(&mut TcpStream) -> Option<()>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if probe(&mut s).is_some() {
                    return Ok(());
                }
            }
            sys::sleep_ms(20);
        }
        Err(format!(
            "{} did not answer on {} within 20 s (data in {})",
            self.target.name(),
            self.addr,
            self.dir.display()
        ))
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        self.pid.and_then(sys::cpu_seconds)
    }

    pub fn mem(&self) -> Option<sys::Mem> {
        self.pid.and_then(sys::mem)
    }

    pub fn connect(&self) -> Result<TcpStream, String> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    pub fn stop(&mut self) {
        self.stop_child();
        if !self.keep && !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// SIGTERM (a clean shutdown), then SIGKILL after 20 s.
    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            sys::signal(child.id(), sys::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => sys::sleep_ms(10),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
