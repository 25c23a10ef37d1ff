//! Finding the MariaDB binaries and preparing data directories: one template datadir per
//! server version, initialised once by `mariadb-install-db` under a file lock and then copied
//! to every node, so that starting a cluster costs a copy instead of a bootstrap.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ProvisionError;

/// Bumped whenever the template recipe (the install-db arguments) changes, so that a cached
/// template made by an older recipe is never reused.
const TEMPLATE_RECIPE: u32 = 1;

/// Where to look besides `$PATH`: Debian puts `mariadbd` in /usr/sbin, often not on a user's PATH.
const FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// The located MariaDB server binaries and the server's version.
#[derive(Debug, Clone)]
pub(crate) struct Mariadb {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    /// The version token of `mariadbd --version`, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub version: String,
}

impl Mariadb {
    /// Finds `mariadbd` and `mariadb-install-db` on `$PATH` or in the usual system directories
    /// and asks the server for its version.
    pub async fn locate() -> Result<Mariadb, ProvisionError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(FALLBACK_DIRS.iter().map(PathBuf::from));
        let (mariadbd, install_db) = locate_in(&dirs)?;
        let out = tokio::process::Command::new(&mariadbd)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                ProvisionError::io(format!("running {} --version", mariadbd.display()), e)
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| ProvisionError::Mariadb {
            message: format!(
                "cannot read the version from `{} --version` (status {}): {text}",
                mariadbd.display(),
                out.status
            ),
        })?;
        Ok(Mariadb {
            mariadbd,
            install_db,
            version,
        })
    }

    /// The cached, initialised template datadir for this server version, creating it if needed.
    ///
    /// Parallel test processes share the cache: an exclusive `flock` on a lock file next to it
    /// makes exactly one of them run install-db while the others wait, and the template only
    /// appears under its final name (by rename) once complete, so a crash mid-install leaves
    /// nothing that looks usable.
    pub async fn ensure_template(&self) -> Result<PathBuf, ProvisionError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.ensure_template_blocking())
            .await
            .map_err(|e| ProvisionError::Mariadb {
                message: format!("template preparation task failed: {e}"),
            })?
    }

    fn ensure_template_blocking(&self) -> Result<PathBuf, ProvisionError> {
        // Per user too: the template's directories are private to their owner.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let name = format!(
            "switchyard-template-{}-r{TEMPLATE_RECIPE}-u{uid}",
            sanitize(&self.version)
        );
        let cache = std::env::temp_dir();
        let template = cache.join(&name);
        if template.is_dir() {
            return Ok(template);
        }
        let lock_path = cache.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ProvisionError::io(format!("opening {}", lock_path.display()), e))?;
        flock_exclusive(&lock)
            .map_err(|e| ProvisionError::io(format!("locking {}", lock_path.display()), e))?;
        // Another process may have finished the template while we waited for the lock.
        if template.is_dir() {
            return Ok(template);
        }
        let partial = cache.join(format!("{name}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .map_err(|e| ProvisionError::io(format!("removing {}", partial.display()), e))?;
        }
        let mut cmd = Command::new(&self.install_db);
        cmd.args(install_db_args(&partial, running_as_root()));
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ProvisionError::io(format!("running {}", self.install_db.display()), e))?;
        if !out.status.success() {
            return Err(ProvisionError::Mariadb {
                message: format!(
                    "{} failed ({}):\n{}{}",
                    self.install_db.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        fs::rename(&partial, &template)
            .map_err(|e| ProvisionError::io(format!("renaming {}", partial.display()), e))?;
        Ok(template)
        // The lock is released when `lock` is closed here.
    }
}

/// Finds both binaries in `dirs` (first hit wins).
pub(crate) fn locate_in(dirs: &[PathBuf]) -> Result<(PathBuf, PathBuf), ProvisionError> {
    let find = |name: &'static str| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
            .ok_or(ProvisionError::MariadbNotInstalled { missing: name })
    };
    Ok((find("mariadbd")?, find("mariadb-install-db")?))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)` ->
/// `10.11.19-MariaDB-0+deb12u1`.
pub(crate) fn parse_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "Ver")?;
    words.next().map(str::to_owned)
}

/// Keeps a version string safe to use in a file name.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Arguments for `mariadb-install-db`. The InnoDB sizes match what the servers run with, so
/// that the first start does not have to resize the redo log.
fn install_db_args(datadir: &Path, as_root: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--no-defaults".into(),
        "--auth-root-authentication-method=normal".into(),
        "--skip-test-db".into(),
    ];
    let mut datadir_arg = OsString::from("--datadir=");
    datadir_arg.push(datadir);
    args.push(datadir_arg);
    if as_root {
        args.push("--user=root".into());
    }
    args.extend(
        [
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=32M",
        ]
        .map(OsString::from),
    );
    args
}

/// Whether this process runs as root, in which case mariadbd refuses to start without
/// `--user=root`.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn flock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives this call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Copies the template into a new node datadir (which must not exist yet).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            copy_sparse(&entry.path(), &target)?;
        }
        // A fresh template holds no symlinks or sockets; anything else is skipped.
    }
    fs::set_permissions(to, fs::metadata(from)?.permissions())
}

/// Copies a file, leaving holes where the source has blocks of zeros.
///
/// A fresh datadir is 34 MB of which under 8 MB is not zeros (the preallocated redo log and
/// system tablespace), and copying is the slowest part of starting a node, so this writes only
/// the data. InnoDB reads holes as zeros and fills them as it writes.
fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    const BLOCK: usize = 64 * 1024;
    // Compared with `==`, which is a memcmp even in unoptimised test builds.
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut src = File::open(from)?;
    let dst = File::create(to)?;
    let mut buf = vec![0u8; BLOCK];
    let mut offset = 0u64;
    loop {
        // Fill the whole block unless the file ends, so that offsets stay block-aligned.
        let mut filled = 0;
        while filled < BLOCK {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk != &ZEROS[..filled] {
            dst.write_all_at(chunk, offset)?;
        }
        offset += filled as u64;
        if filled < BLOCK {
            break;
        }
    }
    // Trailing zeros still count towards the length.
    dst.set_len(offset)?;
    dst.set_permissions(fs::metadata(from)?.permissions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_version_token() {
        let text =
            "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n";
        assert_eq!(
            parse_version(text).as_deref(),
            Some("10.11.19-MariaDB-0+deb12u1")
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn missing_binaries_name_the_install_command() {
        let empty = tempfile::tempdir().expect("tempdir");
        let err = locate_in(&[empty.path().to_path_buf()]).expect_err("nothing to find");
        assert!(matches!(
            err,
            ProvisionError::MariadbNotInstalled {
                missing: "mariadbd"
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install -y mariadb-server mariadb-client"),
            "{msg}"
        );
    }

    #[test]
    fn sparse_copy_keeps_content_and_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        // Data, a long run of zeros, data, and trailing zeros, at sizes off the block grid.
        let mut content = vec![7u8; 1000];
        content.extend(vec![0u8; 300_000]);
        content.extend(vec![9u8; 70_000]);
        content.extend(vec![0u8; 100_000]);
        fs::write(&from, &content).expect("write");
        copy_sparse(&from, &to).expect("copy");
        assert_eq!(fs::read(&to).expect("read"), content);
        fs::write(&from, b"").expect("write");
        copy_sparse(&from, &to).expect("copy empty");
        assert_eq!(fs::read(&to).expect("read"), b"");
    }

    #[test]
    fn sanitized_names_keep_only_safe_characters() {
        assert_eq!(
            sanitize("10.11.19-MariaDB-0+deb12u1"),
            "10.11.19-MariaDB-0+deb12u1"
        );
        assert_eq!(sanitize("a/b c"), "a_b_c");
    }
}
