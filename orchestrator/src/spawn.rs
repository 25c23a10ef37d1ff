//! Starting external programs (hooks, integration scripts).

use std::io;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Spawns `cmd`, trying again for a moment while its file is busy (`ETXTBSY`): a program that
/// was just written can still be open for writing in a child process that another thread is
/// starting at that instant (the descriptor closes when that child execs).
pub async fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return result,
        }
    }
}
