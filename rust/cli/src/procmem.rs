//! Memory and CPU time of processes, as the kernel and the C allocator report them.

/// Resident set of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); `None` if
/// the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:").map(|k| k * 1024)
}

/// Shared-memory segments process `pid` maps (memfd mappings, one per segment): a
/// client holding segments of services that are gone shows here first.
pub fn segment_mappings(pid: u32) -> Option<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(maps.lines().filter(|l| l.contains("/memfd:")).count())
}

/// CPU time process `pid` has used, every thread, user and system, in seconds
/// (`utime` + `stime` of `/proc/<pid>/stat`); `None` if the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// [`cpu_seconds`] as user and system time, in seconds: where two servers making the
/// same system calls differ, it is in their own code.
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = stat_cpu_ticks(&stat)?;
    let hz = clock_ticks_per_s();
    Some((user as f64 / hz, system as f64 / hz))
}

/// `utime` and `stime` of a `/proc/<pid>/stat` line: the 14th and 15th fields, counted
/// after the command name, which may hold spaces and parentheses.
fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The value in KiB of the `/proc/<pid>/status` line that starts with `field`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Bytes of this process's heap in use: what glibc's malloc handed out and was not freed
/// (chunk headers and rounding included, free chunks excluded), over all arenas, plus
/// its mmap'ed chunks. Unlike RSS it does not move with freed-but-kept pages or with
/// other threads' stacks, and unlike a counting allocator it includes what each
/// allocation really costs.
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_an_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(stat), Some((70, 30)));
        assert_eq!(stat_cpu_ticks("42 (a) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn reads_vmrss_lines() {
        let s = "Name:\tmmc\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(s, "VmSwap:"), None);
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }

    #[test]
    fn heap_counts_a_live_allocation() {
        // Far more than the other tests, running in parallel, allocate or free
        // meanwhile (a megabyte was not: this failed once in CI), and above glibc's
        // largest dynamic mmap threshold (32 MiB), so it is mapped on its own.
        const LEN: usize = 64 << 20;
        let before = heap_in_use();
        let v = vec![0u8; LEN];
        assert!(heap_in_use() >= before + LEN as u64);
        drop(v);
    }
}
