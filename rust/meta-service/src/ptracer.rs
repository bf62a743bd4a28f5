//! Tracepoints (the spec's ptracer): per named point, how many calls began, ended well,
//! ended badly or are still running, and min / max / avg / total duration. Lock-free
//! atomics, cheap enough to stay on in production.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use memcache_proto::TraceRow;

/// The meta service's tracepoints, one per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Tp {
    Put,
    BatchPut,
    Get,
    BatchGet,
    Update,
    BatchUpdate,
    Abort,
    Release,
    Query,
    Exist,
    Remove,
    BatchRemove,
    BmRegister,
    BmUnregister,
    Heartbeat,
}

const POINTS: [(Tp, &str); 15] = [
    (Tp::Put, "TP_MMC_META_PUT"),
    (Tp::BatchPut, "TP_MMC_META_BATCH_PUT"),
    (Tp::Get, "TP_MMC_META_GET"),
    (Tp::BatchGet, "TP_MMC_META_BATCH_GET"),
    (Tp::Update, "TP_MMC_META_UPDATE"),
    (Tp::BatchUpdate, "TP_MMC_META_BATCH_UPDATE"),
    (Tp::Abort, "TP_MMC_META_ABORT"),
    (Tp::Release, "TP_MMC_META_RELEASE"),
    (Tp::Query, "TP_MMC_META_QUERY"),
    (Tp::Exist, "TP_MMC_META_EXIST"),
    (Tp::Remove, "TP_MMC_META_REMOVE"),
    (Tp::BatchRemove, "TP_MMC_META_BATCH_REMOVE"),
    (Tp::BmRegister, "TP_MMC_META_BM_REGISTER"),
    (Tp::BmUnregister, "TP_MMC_META_BM_UNREGISTER"),
    (Tp::Heartbeat, "TP_MMC_META_HEARTBEAT"),
];

impl Tp {
    /// The single- or batch-call point, by batch size.
    pub fn sized(single: Tp, batch: Tp, n: usize) -> Tp {
        if n > 1 {
            batch
        } else {
            single
        }
    }
}

#[derive(Default)]
struct Point {
    begin: AtomicU64,
    good: AtomicU64,
    bad: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
    total_ns: AtomicU64,
}

pub struct Tracer {
    points: Vec<Point>,
    enabled: bool,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new(true)
    }
}

impl Tracer {
    /// A tracer; a disabled one records nothing (to measure what tracing costs).
    pub fn new(enabled: bool) -> Self {
        let points = POINTS
            .iter()
            .map(|_| Point {
                min_ns: AtomicU64::new(u64::MAX),
                ..Default::default()
            })
            .collect();
        Tracer { points, enabled }
    }
}

/// A call in flight; `end` records it.
pub struct Span<'a> {
    point: Option<&'a Point>,
    start: Instant,
}

impl Tracer {
    pub fn begin(&self, tp: Tp) -> Span<'_> {
        let point = self.enabled.then(|| &self.points[tp as usize]);
        if let Some(p) = point {
            p.begin.fetch_add(1, Ordering::Relaxed);
        }
        Span {
            point,
            start: Instant::now(),
        }
    }

    pub fn rows(&self) -> Vec<TraceRow> {
        POINTS
            .iter()
            .zip(&self.points)
            .map(|((_, name), p)| {
                let (begin, good, bad) = (
                    p.begin.load(Ordering::Relaxed),
                    p.good.load(Ordering::Relaxed),
                    p.bad.load(Ordering::Relaxed),
                );
                let min = p.min_ns.load(Ordering::Relaxed);
                TraceRow {
                    name: name.to_string(),
                    begin,
                    good_end: good,
                    bad_end: bad,
                    on_fly: begin.saturating_sub(good + bad),
                    min_ns: if min == u64::MAX { 0 } else { min },
                    max_ns: p.max_ns.load(Ordering::Relaxed),
                    total_ns: p.total_ns.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl Span<'_> {
    pub fn end(self, ok: bool) {
        let Some(p) = self.point else { return };
        let ns = self.start.elapsed().as_nanos() as u64;
        if ok { &p.good } else { &p.bad }.fetch_add(1, Ordering::Relaxed);
        p.total_ns.fetch_add(ns, Ordering::Relaxed);
        p.min_ns.fetch_min(ns, Ordering::Relaxed);
        p.max_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// The spec's table: a header line, then one line per point that has seen a call.
pub fn table(rows: &[TraceRow], at: SystemTime) -> String {
    let mut out = format!(
        "{:<23}{:<40}{:<15}{:<15}{:<15}{:<15}{:<15}{:<15}{:<15}{:<15}\n",
        "TIME",
        "NAME",
        "BEGIN",
        "GOOD_END",
        "BAD_END",
        "ON_FLY",
        "MIN(us)",
        "MAX(us)",
        "AVG(us)",
        "TOTAL(us)"
    );
    let time = utc(at);
    for r in rows.iter().filter(|r| r.begin > 0) {
        let ended = (r.good_end + r.bad_end).max(1);
        let us = |ns: u64| ns as f64 / 1000.0;
        out.push_str(&format!(
            "{:<23}{:<40}{:<15}{:<15}{:<15}{:<15}{:<15.3}{:<15.3}{:<15.3}{:<15.3}\n",
            time,
            r.name,
            r.begin,
            r.good_end,
            r.bad_end,
            r.on_fly,
            us(r.min_ns),
            us(r.max_ns),
            us(r.total_ns) / ended as f64,
            us(r.total_ns)
        ));
    }
    out
}

/// `YYYY-MM-DD hh:mm:ss` in UTC.
fn utc(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_and_durations_add_up() {
        let t = Tracer::default();
        t.begin(Tp::Put).end(true);
        t.begin(Tp::Put).end(false);
        let _running = t.begin(Tp::Put);
        let row = &t.rows()[Tp::Put as usize];
        assert_eq!(row.name, "TP_MMC_META_PUT");
        assert_eq!(
            (row.begin, row.good_end, row.bad_end, row.on_fly),
            (3, 1, 1, 1)
        );
        assert!(row.min_ns <= row.max_ns && row.max_ns <= row.total_ns);
        let text = table(&t.rows(), UNIX_EPOCH + Duration::from_secs(1_767_625_023));
        assert!(text.starts_with("TIME"));
        assert!(
            text.contains("2026-01-05 14:57:03    TP_MMC_META_PUT"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "only points that saw calls");
    }
}
