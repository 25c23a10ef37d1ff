//! Faults that reset no connection, as real outages look, for the benchmark and the tests: a
//! frozen process (`SIGSTOP`: its sockets stay open and the kernel keeps accepting
//! connections for it, but nothing answers), and a blackholed port (every packet to or from
//! it dropped on loopback, in both directions, by iptables rules: established connections
//! stall and new ones never complete), a full disk (a filler file that takes every free
//! block of a filesystem of the node's own), and a stalled one (that filesystem frozen with
//! `fsfreeze`: every write to it waits). Each fault is a guard that undoes itself when dropped,
//! so a failed run leaves no frozen server or firewall rule behind. Only loopback ports of
//! servers the caller started are touched.

use std::process::Command;

/// A process stopped with `SIGSTOP` until [`Frozen::thaw`] or drop.
#[derive(Debug)]
pub struct Frozen {
    pid: u32,
    thawed: bool,
}

/// Freezes `pid` (a server the caller started).
pub fn freeze(pid: u32) -> std::io::Result<Frozen> {
    signal(pid, libc::SIGSTOP)?;
    Ok(Frozen { pid, thawed: false })
}

impl Frozen {
    pub fn thaw(mut self) {
        self.thawed = true;
        let _ = signal(self.pid, libc::SIGCONT);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = signal(self.pid, libc::SIGCONT);
        }
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
    rules: Vec<Vec<String>>,
    healed: bool,
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
    let out = Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|e| {
            format!(
                "cannot run iptables ({e}): partitions need it and root \
                 (apt-get install -y iptables)"
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {action} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Adds `rules`; on failure removes those already added.
fn install(rules: Vec<Vec<String>>) -> Result<Blackhole, String> {
    let mut hole = Blackhole {
        rules: Vec::new(),
        healed: false,
    };
    for rule in rules {
        iptables("-I", &rule)?;
        // From the first rule on, drop undoes what was added.
        hole.rules.push(rule);
    }
    Ok(hole)
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
        self.remove();
    }

    fn remove(&mut self) {
        if !self.healed {
            self.healed = true;
            for rule in &self.rules {
                let _ = iptables("-D", rule);
            }
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A filesystem filled up by a filler file, until [`DiskFull::free`] or drop.
#[derive(Debug)]
pub struct DiskFull {
    filler: std::path::PathBuf,
    freed: bool,
}

/// Fills the filesystem of `dir` (one of the node's own, such as
/// `orchestrator::provision::LocalNode::binlog_dir`) with a file of zeros until writing fails
/// with "no space left on device". Never use it on a shared filesystem.
pub fn fill_disk(dir: &std::path::Path) -> std::io::Result<DiskFull> {
    use std::io::Write;
    let filler = dir.join("fault-filler");
    let mut file = std::fs::File::create(&filler)?;
    let full = DiskFull {
        filler,
        freed: false,
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
        self.remove();
    }

    fn remove(&mut self) {
        if !self.freed {
            self.freed = true;
            let _ = std::fs::remove_file(&self.filler);
        }
    }
}

impl Drop for DiskFull {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A filesystem frozen with `fsfreeze` (every write to it waits, as on a disk that stopped
/// answering), until [`StalledDisk::resume`] or drop.
#[derive(Debug)]
pub struct StalledDisk {
    dir: std::path::PathBuf,
    resumed: bool,
}

/// Freezes the filesystem mounted at `dir` (one of the node's own, such as
/// `orchestrator::provision::LocalNode::binlog_dir`; tmpfs cannot be frozen).
pub fn stall_disk(dir: &std::path::Path) -> Result<StalledDisk, String> {
    fsfreeze("-f", dir)?;
    Ok(StalledDisk {
        dir: dir.to_path_buf(),
        resumed: false,
    })
}

fn fsfreeze(flag: &str, dir: &std::path::Path) -> Result<(), String> {
    let out = Command::new("fsfreeze")
        .arg(flag)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run fsfreeze ({e}): a stalled disk needs it and root"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fsfreeze {flag} {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl StalledDisk {
    /// Lets the writes through again.
    pub fn resume(mut self) {
        self.thaw();
    }

    fn thaw(&mut self) {
        if !self.resumed {
            self.resumed = true;
            let _ = fsfreeze("-u", &self.dir);
        }
    }
}

impl Drop for StalledDisk {
    fn drop(&mut self) {
        self.thaw();
    }
}
