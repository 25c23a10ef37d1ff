//! CPU time used by a process, user and system apart: this process's through
//! `getrusage(RUSAGE_SELF)` (microseconds, every thread), another's through `/proc/<pid>/stat`
//! (clock ticks, usually 10 ms, every thread).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// CPU time consumed so far (or between two readings).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// What was used since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::iter::Sum for CpuTime {
    fn sum<I: Iterator<Item = CpuTime>>(iter: I) -> CpuTime {
        iter.fold(CpuTime::default(), |a, b| CpuTime {
            user: a.user + b.user,
            system: a.system + b.system,
        })
    }
}

/// This process, every thread (the router's tasks run on the bench process's runtime).
pub fn this_process() -> std::io::Result<CpuTime> {
    // SAFETY: getrusage only writes into the zeroed struct we pass; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let dur = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    Ok(CpuTime {
        user: dur(usage.ru_utime),
        system: dur(usage.ru_stime),
    })
}

/// Another process, every thread, from `/proc/<pid>/stat`.
pub fn process(pid: u32) -> std::io::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat, clock_ticks_per_second()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat: {stat}"),
        )
    })
}

/// The threads of this process named `name` (as the kernel keeps it: at most 15 bytes),
/// summed, from `/proc/self/task/<tid>/stat`. A thread that ended is no longer counted, so
/// readings to subtract should come from threads that live across both.
pub fn threads_named(name: &str) -> std::io::Result<CpuTime> {
    let ticks = clock_ticks_per_second();
    let mut sum = CpuTime::default();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
            continue; // ended since the listing
        };
        let comm = stat
            .find('(')
            .zip(stat.rfind(')'))
            .and_then(|(a, b)| stat.get(a + 1..b));
        if comm != Some(name) {
            continue;
        }
        sum = [sum, parse_stat(&stat, ticks).unwrap_or_default()]
            .into_iter()
            .sum();
    }
    Ok(sum)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// utime and stime, fields 14 and 15 of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces or parentheses, so fields are counted from the last
/// `)`.
fn parse_stat(stat: &str, ticks_per_second: u64) -> Option<CpuTime> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let dur = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / ticks_per_second);
    Some(CpuTime {
        user: dur(utime),
        system: dur(stime),
    })
}

/// CPU a process spent on a row, and per query sysbench ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuCost {
    /// Whose CPU: `switchyard` (the bench process, hosting the router), `haproxy`, or
    /// `bench-process` (on direct rows: what the process uses with no router traffic).
    pub process: String,
    pub user_s: f64,
    pub system_s: f64,
    pub us_per_query: f64,
    pub user_us_per_query: f64,
    pub system_us_per_query: f64,
}

impl CpuCost {
    /// `None` when sysbench ran no query (there is nothing to divide by).
    pub fn new(process: &str, used: CpuTime, queries: u64) -> Option<CpuCost> {
        if queries == 0 {
            return None;
        }
        let per_query = |d: Duration| d.as_secs_f64() * 1e6 / queries as f64;
        Some(CpuCost {
            process: process.to_string(),
            user_s: used.user.as_secs_f64(),
            system_s: used.system.as_secs_f64(),
            us_per_query: per_query(used.total()),
            user_us_per_query: per_query(used.user),
            system_us_per_query: per_query(used.system),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (ha (proxy) x) S 1 4242 4242 0 -1 4194560 1570 0 0 0 \
                    250 75 0 0 20 0 3 0 123 456 789";
        let t = parse_stat(stat, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
        assert!(parse_stat("4242 (x) S 1", 100).is_none());
    }

    #[test]
    fn this_process_and_its_proc_entry_agree() {
        // Spin until this process has used 50 ms more CPU (not wall time: the machine may be
        // busy), then compare the two readings.
        let start = this_process().unwrap();
        while this_process().unwrap().since(start).total() < Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        let own = this_process().unwrap();
        let via_proc = process(std::process::id()).unwrap();
        // /proc counts in ticks (10 ms): equal within a few of them.
        let diff = own.total().as_secs_f64() - via_proc.total().as_secs_f64();
        assert!(diff.abs() < 0.1, "{own:?} vs {via_proc:?}");
        assert!(own.since(start).total() >= Duration::from_millis(50));
    }

    #[test]
    fn threads_are_counted_by_name() {
        let process_before = this_process().unwrap();
        let spin = std::thread::Builder::new()
            .name("sy-cpu-test".into())
            .spawn(|| {
                // Spin until this thread's reading shows 100 ms (a reading that stays at zero
                // fails at the deadline); read while alive: /proc lists live threads only.
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let used = threads_named("sy-cpu-test").unwrap();
                    if used.total() >= Duration::from_millis(100) {
                        return Some(used);
                    }
                    if std::time::Instant::now() > deadline {
                        return None;
                    }
                    for _ in 0..10_000 {
                        std::hint::black_box(0u64);
                    }
                }
            })
            .unwrap();
        let used = spin
            .join()
            .unwrap()
            .expect("the thread's CPU never reached 100 ms");
        // Part of what the whole process used meanwhile (ticks are 10 ms).
        let process = this_process().unwrap().since(process_before);
        assert!(
            used.total() <= process.total() + Duration::from_millis(20),
            "{used:?} vs {process:?}"
        );
        assert_eq!(threads_named("no-such-thread").unwrap(), CpuTime::default());
    }

    #[test]
    fn cost_per_query_splits_user_and_system() {
        let used = CpuTime {
            user: Duration::from_millis(300),
            system: Duration::from_millis(100),
        };
        let c = CpuCost::new("switchyard", used, 20_000).unwrap();
        assert_eq!(c.us_per_query, 20.0);
        assert_eq!(c.user_us_per_query, 15.0);
        assert_eq!(c.system_us_per_query, 5.0);
        assert_eq!(CpuCost::new("x", used, 0), None);
    }
}
