//! Faults that reset no connection, as real outages look, for the benchmark and the tests: a
//! frozen process (`SIGSTOP`: its sockets stay open and the kernel keeps accepting
//! connections for it, but nothing answers), and a blackholed port (every packet to or from
//! it dropped on loopback, in both directions or in one, by iptables rules: established
//! connections stall and new ones never complete), a full disk (a filler file that takes every free
//! block of a filesystem of the node's own), and a stalled one (that filesystem frozen with
//! `fsfreeze`: every write to it waits). Each fault is a guard that undoes itself when dropped,
//! so a failed run leaves no frozen server or firewall rule behind. Only loopback ports of
//! servers the caller started are touched.

use std::ffi::OsStr;
use std::process::Command;

/// Undoes a fault once: when its guard is told to, or when the guard is dropped.
struct Undo(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Undo {
    fn new(undo: impl FnOnce() + Send + Sync + 'static) -> Undo {
        Undo(Some(Box::new(undo)))
    }

    fn now(&mut self) {
        if let Some(undo) = self.0.take() {
            undo();
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        self.now();
    }
}

impl std::fmt::Debug for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Undo(pending)"
        } else {
            "Undo(done)"
        })
    }
}

/// Runs `program` with `args`; an error names the command and holds its stderr, or says what
/// `needs` it when it cannot run at all.
fn run<S: AsRef<OsStr>>(program: &str, args: &[S], needs: &str) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} ({e}): {needs}"))?;
    if out.status.success() {
        return Ok(());
    }
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    Err(format!(
        "{program} {}: {}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A process stopped with `SIGSTOP` until [`Frozen::thaw`] or drop.
#[derive(Debug)]
pub struct Frozen {
    undo: Undo,
}

/// Freezes `pid` (a server the caller started).
pub fn freeze(pid: u32) -> std::io::Result<Frozen> {
    signal(pid, libc::SIGSTOP)?;
    Ok(Frozen {
        undo: Undo::new(move || {
            let _ = signal(pid, libc::SIGCONT);
        }),
    })
}

impl Frozen {
    pub fn thaw(mut self) {
        self.undo.now();
    }
}

fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes no pointers; the pid is a child of this process.
    match unsafe { libc::kill(pid, sig) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Every TCP packet to or from a loopback port dropped (or only some of them: see
/// [`blackhole_from`], [`blackhole_except`]), until [`Blackhole::heal`] or drop.
#[derive(Debug)]
pub struct Blackhole {
    undo: Undo,
}

/// An iptables rule on loopback input: TCP, `matches`, dropped.
fn drop_rule(matches: &[&str]) -> Vec<String> {
    let mut rule: Vec<String> = ["INPUT", "-i", "lo", "-p", "tcp"]
        .map(String::from)
        .to_vec();
    rule.extend(matches.iter().map(|m| m.to_string()));
    rule.extend(["-j", "DROP"].map(String::from));
    rule
}

fn iptables(action: &str, rule: &[String]) -> Result<(), String> {
    let mut args = vec!["-w".to_string(), action.to_string()];
    args.extend_from_slice(rule);
    run(
        "iptables",
        &args,
        "partitions need it and root (apt-get install -y iptables)",
    )
}

fn remove_rules(rules: &[Vec<String>]) {
    for rule in rules {
        let _ = iptables("-D", rule);
    }
}

/// Adds `rules`; on failure removes those already added.
fn install(rules: Vec<Vec<String>>) -> Result<Blackhole, String> {
    let mut added = Vec::new();
    for rule in rules {
        if let Err(e) = iptables("-I", &rule) {
            remove_rules(&added);
            return Err(e);
        }
        added.push(rule);
    }
    Ok(Blackhole {
        undo: Undo::new(move || remove_rules(&added)),
    })
}

/// Drops all traffic of `port` on loopback, without resets: requests arriving for it and
/// answers leaving it.
pub fn blackhole(port: u16) -> Result<Blackhole, String> {
    let p = port.to_string();
    install(vec![
        drop_rule(&["--dport", &p]),
        drop_rule(&["--sport", &p]),
    ])
}

/// Drops only the packets leaving `port` on loopback (its answers and whatever it streams),
/// without resets: requests still reach it and run, nobody hears back. The one-way failure in
/// which a server goes on executing what it is sent (a write whose reply is lost commits)
/// while everyone else takes it for gone.
pub fn cut_answers(port: u16) -> Result<Blackhole, String> {
    install(vec![drop_rule(&["--sport", &port.to_string()])])
}

/// Cuts a process from its peers without resets: packets the user `uid` (that process's
/// own, and no other process's) sends to the ports `peers`, and every packet arriving for its
/// own port `own`, dropped on loopback. Clients reach it on its other ports as before: an
/// etcd member partitioned from the others but not from the clients connected to it.
pub fn cut_from_peers(uid: u32, own: u16, peers: &[u16]) -> Result<Blackhole, String> {
    if peers.is_empty() || peers.len() > 15 {
        return Err(format!("{} peer ports: 1 to 15 can be", peers.len()));
    }
    let ports: Vec<String> = peers.iter().map(u16::to_string).collect();
    let outbound: Vec<String> = [
        "OUTPUT",
        "-o",
        "lo",
        "-p",
        "tcp",
        "-m",
        "owner",
        "--uid-owner",
        &uid.to_string(),
        "-m",
        "multiport",
        "--dports",
        &ports.join(","),
        "-j",
        "DROP",
    ]
    .map(String::from)
    .to_vec();
    install(vec![drop_rule(&["--dport", &own.to_string()]), outbound])
}

/// Drops the traffic between `port` and connections from the local address `source` only
/// (a process whose connections leave from it, such as a router with
/// `backend_source_address`): one path cut, the others intact.
pub fn blackhole_from(port: u16, source: std::net::Ipv4Addr) -> Result<Blackhole, String> {
    let (p, src) = (port.to_string(), source.to_string());
    install(vec![
        drop_rule(&["-s", &src, "--dport", &p]),
        drop_rule(&["-d", &src, "--sport", &p]),
    ])
}

/// Drops the traffic between `port` and the connections leaving from the local address
/// `from`, but for the established ones from the client ports `spare` (at most 15, an
/// iptables `multiport` limit): the server cut off from, say, the orchestrator while its
/// replicas' streams (and anything leaving from another address) go on.
pub fn blackhole_except(
    port: u16,
    from: std::net::Ipv4Addr,
    spare: &[u16],
) -> Result<Blackhole, String> {
    if spare.is_empty() || spare.len() > 15 {
        return Err(format!("{} ports to spare: 1 to 15 can be", spare.len()));
    }
    let (p, src) = (port.to_string(), from.to_string());
    let ports: Vec<String> = spare.iter().map(u16::to_string).collect();
    let ports = ports.join(",");
    install(vec![
        drop_rule(&[
            "-s",
            &src,
            "--dport",
            &p,
            "-m",
            "multiport",
            "!",
            "--sports",
            &ports,
        ]),
        drop_rule(&[
            "-d",
            &src,
            "--sport",
            &p,
            "-m",
            "multiport",
            "!",
            "--dports",
            &ports,
        ]),
    ])
}

impl Blackhole {
    /// Lets traffic through again; stalled connections resume where they were.
    pub fn heal(mut self) {
        self.undo.now();
    }
}

/// A filesystem filled up by a filler file, until [`DiskFull::free`] or drop.
#[derive(Debug)]
pub struct DiskFull {
    undo: Undo,
}

/// Fills the filesystem of `dir` (one of the node's own, such as
/// `orchestrator::provision::LocalNode::binlog_dir`) with a file of zeros until writing fails
/// with "no space left on device". Never use it on a shared filesystem.
pub fn fill_disk(dir: &std::path::Path) -> std::io::Result<DiskFull> {
    use std::io::Write;
    let filler = dir.join("fault-filler");
    let mut file = std::fs::File::create(&filler)?;
    let full = DiskFull {
        undo: Undo::new(move || {
            let _ = std::fs::remove_file(&filler);
        }),
    };
    let block = [0u8; 4096];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(full)
}

impl DiskFull {
    /// Frees the space again.
    pub fn free(mut self) {
        self.undo.now();
    }
}

/// A filesystem frozen with `fsfreeze` (every write to it waits, as on a disk that stopped
/// answering), until [`StalledDisk::resume`] or drop.
#[derive(Debug)]
pub struct StalledDisk {
    undo: Undo,
}

/// Freezes the filesystem mounted at `dir` (one of the node's own, such as
/// `orchestrator::provision::LocalNode::binlog_dir`; tmpfs cannot be frozen).
pub fn stall_disk(dir: &std::path::Path) -> Result<StalledDisk, String> {
    fsfreeze("-f", dir)?;
    let dir = dir.to_path_buf();
    Ok(StalledDisk {
        undo: Undo::new(move || {
            let _ = fsfreeze("-u", &dir);
        }),
    })
}

fn fsfreeze(flag: &str, dir: &std::path::Path) -> Result<(), String> {
    run(
        "fsfreeze",
        &[OsStr::new(flag), dir.as_os_str()],
        "a stalled disk needs it and root",
    )
}

impl StalledDisk {
    /// Lets the writes through again.
    pub fn resume(mut self) {
        self.undo.now();
    }
}
