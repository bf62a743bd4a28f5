//! Processes the benchmarks start (servers to measure), on loopback addresses.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) when dropped, however the benchmark ends.
pub struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
