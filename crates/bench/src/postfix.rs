//! Postfix's test tools as references: `smtp-sink` (a fast loopback SMTP
//! server that throws mail away) and `smtp-source` (a fast client).
//!
//! Every process started here is ours, listens on 127.0.0.1 only and is
//! killed by its guard's `Drop`, also when the figure that needed it fails.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// A free loopback port (bound once, then released).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `addr` (at most `limit`).
pub(crate) fn wait_listening(addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {limit:?}")
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A running `smtp-sink` on a loopback port; killed on drop.
pub(crate) struct SmtpSink {
    child: Child,
    pub addr: SocketAddr,
}

impl SmtpSink {
    pub fn start() -> anyhow::Result<Self> {
        if !Path::new(SMTP_SINK).exists() {
            bail!("{SMTP_SINK} is missing: install postfix (its test tools are the reference)");
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(SMTP_SINK);
        if is_root() {
            // smtp-sink refuses to run as root without a user to switch to.
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(addr.to_string())
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting smtp-sink")?;
        let sink = SmtpSink { child, addr };
        wait_listening(addr, Duration::from_secs(5))?;
        Ok(sink)
    }

    /// CPU seconds the sink has used so far (user + system).
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.child.id())
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds used by process `pid` (user + system), 0 if unknown.
pub(crate) fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    stat_cpu_secs(&stat)
}

/// CPU seconds used so far by every running process called `comm` (e.g. all
/// PostgreSQL processes), with the CPU of their children that have ended
/// (a backend that exits is reaped by the postmaster, whose `cutime` and
/// `cstime` then hold it), so a delta over a run counts backends that ended
/// during it too.
pub(crate) fn comm_cpu_secs(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let needle = format!("({comm})");
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        name.to_str()?.parse::<u32>().ok()?;
        std::fs::read_to_string(format!("/proc/{}/stat", name.to_str()?)).ok()
    })
    .filter(|stat| stat.contains(&needle))
    .map(|stat| stat_cpu_secs(&stat) + stat_children_cpu_secs(&stat))
    .sum()
}

/// CPU seconds of a process's own threads (`utime` + `stime`, fields 14 and
/// 15 of its `/proc/PID/stat`).
fn stat_cpu_secs(stat: &str) -> f64 {
    stat_tick_pair_secs(stat, 11)
}

/// CPU seconds of the ended, reaped children of a process (`cutime` +
/// `cstime`, fields 16 and 17).
fn stat_children_cpu_secs(stat: &str) -> f64 {
    stat_tick_pair_secs(stat, 13)
}

/// The sum of two adjacent clock-tick fields of a `/proc/PID/stat` line, in
/// seconds; `first` counts from the field after the command name (which may
/// hold spaces, so the fields start after its closing ") ").
fn stat_tick_pair_secs(stat: &str, first: usize) -> f64 {
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(first)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// Runs `smtp-source` to `addr` and returns messages/s (wall time of the
/// whole run). `keep` = `-d` (one connection per session for all its
/// messages); without it every message opens its own connection.
pub(crate) fn smtp_source(
    addr: SocketAddr,
    sessions: usize,
    count: usize,
    size: usize,
    keep: bool,
) -> anyhow::Result<f64> {
    let mut cmd = Command::new(SMTP_SOURCE);
    if keep {
        cmd.arg("-d");
    }
    cmd.args(["-s", &sessions.to_string(), "-m", &count.to_string()])
        .args(["-l", &size.to_string(), "-r", "1"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = run_with_timeout(&mut cmd, Duration::from_secs(180))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "smtp-source failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(count as f64 / secs)
}

/// `cmd.output()` with a deadline: the child is killed when it is reached.
pub(crate) fn run_with_timeout(
    cmd: &mut Command,
    limit: Duration,
) -> anyhow::Result<std::process::Output> {
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private Postfix instance (its own config, queue and data directories
/// under the bench's work directory) whose smtpd listens on one loopback
/// port and whose every transport is `discard:`. `postfix -c DIR stop` on
/// drop; it never touches the system instance's port 25 or queue.
pub(crate) struct PrivatePostfix {
    config_dir: PathBuf,
    pub addr: SocketAddr,
}

impl PrivatePostfix {
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        if !is_root() {
            bail!("a private Postfix instance needs root (postfix start)");
        }
        if !Path::new("/usr/sbin/postfix").exists() {
            bail!("postfix is not installed");
        }
        let config_dir = root.join("etc");
        // An instance left over from an interrupted run: stop it before its
        // directories go away.
        if config_dir.join("main.cf").exists() {
            let _ = postfix_cmd(&config_dir, "stop");
        }
        let _ = std::fs::remove_dir_all(root);
        let queue = root.join("queue");
        let data = root.join("data");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::create_dir_all(&queue)?;
        std::fs::create_dir_all(&data)?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        std::fs::write(
            config_dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 syslog_name = postfix-rundbrief-bench\n\
                 maillog_file = {root}/maillog\n\
                 maillog_file_prefixes = {root}\n\
                 myhostname = bench.localdomain\n\
                 mydomain = localdomain\n\
                 myorigin = localdomain\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 smtpd_recipient_restrictions = permit_mynetworks, reject\n\
                 default_transport = discard:bench\n\
                 relay_transport = discard:bench\n\
                 local_transport = discard:bench\n\
                 virtual_transport = discard:bench\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 smtpd_banner = $myhostname ESMTP\n\
                 default_process_limit = 100\n\
                 smtpd_client_connection_count_limit = 0\n\
                 smtpd_client_connection_rate_limit = 0\n\
                 smtpd_client_message_rate_limit = 0\n\
                 smtpd_client_recipient_rate_limit = 0\n\
                 smtpd_peername_lookup = no\n\
                 smtpd_tls_security_level = none\n\
                 smtp_tls_security_level = none\n\
                 biff = no\n\
                 shlib_directory = /usr/lib/postfix\n\
                 daemon_directory = /usr/lib/postfix/sbin\n\
                 command_directory = /usr/sbin\n\
                 meta_directory = /etc/postfix\n",
                queue = queue.display(),
                data = data.display(),
                root = root.display(),
            ),
        )?;
        // The stock master.cf with its port-25 smtpd replaced by ours and no
        // chroot (the private queue directory has no copies of /etc files).
        let stock = std::fs::read_to_string("/etc/postfix/master.cf")
            .context("reading /etc/postfix/master.cf")?;
        let mut master = String::new();
        for line in stock.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with('#') || line.starts_with(char::is_whitespace) || fields.len() < 8 {
                master.push_str(line);
            } else if fields[0] == "smtp" && fields[1] == "inet" {
                master.push_str(&format!("{addr} inet n - n - - smtpd"));
            } else {
                let mut f = fields.clone();
                f[4] = "n";
                master.push_str(&f.join(" "));
            }
            master.push('\n');
        }
        std::fs::write(config_dir.join("master.cf"), master)?;
        // master.lock and the TLS caches live in data_directory, owned by postfix.
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .context("chown postfix data_directory")?;
        if !chown.success() {
            bail!("chown postfix {} failed", data.display());
        }
        let _ = postfix_cmd(&config_dir, "set-permissions");
        let pf = PrivatePostfix { config_dir, addr };
        let out = postfix_cmd(&pf.config_dir, "start")?;
        if !out.status.success() {
            // Postfix reports to syslog (none here) and to its maillog file.
            let log = std::fs::read_to_string(root.join("maillog")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "postfix -c {} start failed: {}",
                pf.config_dir.display(),
                tail.join(" | ")
            );
        }
        wait_listening(addr, Duration::from_secs(10))?;
        Ok(pf)
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let _ = postfix_cmd(&self.config_dir, "stop");
    }
}

/// `postfix -c DIR VERB` with a 60 s deadline. Its output is not captured:
/// `start` daemonises master, which would hold a pipe open; errors go to the
/// instance's maillog file.
fn postfix_cmd(config_dir: &Path, verb: &str) -> anyhow::Result<std::process::Output> {
    run_with_timeout(
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(config_dir)
            .arg(verb)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        Duration::from_secs(60),
    )
}
