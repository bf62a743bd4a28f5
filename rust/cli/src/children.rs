//! Processes the benchmarks start (servers to measure), on loopback addresses.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped, however the benchmark ends.
pub struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Owned {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Asks the process to stop (SIGTERM), as an operator would, and waits for it up to
    /// `within`; kills it if it is still there then. Whether it stopped by itself.
    pub fn terminate(mut self, within: Duration) -> bool {
        // SAFETY: signalling a child we still own (not yet reaped, so the pid is ours).
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let give_up = Instant::now() + within;
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false // dropped: killed and reaped
    }
}

/// Runs `program ARGS` with no stderr and returns it once it printed its first line
/// (services print where they listen once they serve), with that line. Later output
/// goes nowhere (our services ignore a closed stdout).
pub fn spawn_ready(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    within: Duration,
) -> Result<(Owned, String), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped");
    let owned = Owned(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(within) {
        Ok(line) if !line.is_empty() => Ok((owned, line.trim_end().to_string())),
        _ => Err(format!(
            "{} did not start within {within:?}",
            args.join(" ")
        )),
    }
}

/// Runs `program ARGS` quietly (no stdout or stderr).
pub fn spawn_quiet(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> std::io::Result<Owned> {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Owned)
}

/// `n` distinct free loopback addresses (free when asked; bound by nobody after).
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>, String> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    held.iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect()
}

/// The `tcp://` address an `mmc meta` announces at the end of its first line.
pub fn announced_url(line: &str) -> Result<String, String> {
    line.rsplit(' ')
        .next()
        .filter(|u| u.starts_with("tcp://"))
        .map(str::to_string)
        .ok_or_else(|| format!("meta said {line:?}"))
}
