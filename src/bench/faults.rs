//! Faults that reset no connection, as real outages look, for the benchmark and the tests: a
//! frozen process (`SIGSTOP`: its sockets stay open and the kernel keeps accepting
//! connections for it, but nothing answers), and a blackholed port (every packet to or from
//! it dropped on loopback, in both directions, by iptables rules: established connections
//! stall and new ones never complete), and a full disk (a filler file that takes every free
//! block of a filesystem of the node's own). Each fault is a guard that undoes itself when dropped,
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

/// Every TCP packet to or from a loopback port dropped, until [`Blackhole::heal`] or drop.
#[derive(Debug)]
pub struct Blackhole {
    port: u16,
    healed: bool,
}

/// The iptables rules of a blackhole: packets arriving on loopback for the port (requests)
/// and from it (answers).
fn rules(port: u16) -> [Vec<String>; 2] {
    let p = port.to_string();
    let rule = |dir: &str| {
        ["INPUT", "-i", "lo", "-p", "tcp", dir, &p, "-j", "DROP"]
            .map(String::from)
            .to_vec()
    };
    [rule("--dport"), rule("--sport")]
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

/// Drops all traffic of `port` on loopback, without resets.
pub fn blackhole(port: u16) -> Result<Blackhole, String> {
    let mut hole = Blackhole { port, healed: true };
    for rule in rules(port) {
        iptables("-I", &rule)?;
        // From the first rule on, drop undoes what was added.
        hole.healed = false;
    }
    Ok(hole)
}

impl Blackhole {
    /// Lets traffic through again; stalled connections resume where they were.
    pub fn heal(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if !self.healed {
            self.healed = true;
            for rule in rules(self.port) {
                // A rule that was not added (the second, after a failed insert) is simply
                // not found.
                let _ = iptables("-D", &rule);
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
