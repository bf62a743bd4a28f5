//! The meta service's Prometheus metrics, in a registry the service owns.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use memcache_core::Medium;
use memcache_meta::StateMachine;
use memcache_proto::RoleInfo;

pub struct Metrics {
    pub registry: Registry,
    pub alloc_ops: IntCounter,
    pub remove_ops: IntCounter,
    pub get_ops: IntCounter,
    evict_ops: IntCounter,
    pub get_hits: IntCounter,
    pub get_misses: IntCounter,
    stored_keys: IntGauge,
    used_bytes: IntGaugeVec,
    capacity_bytes: IntGaugeVec,
    pub local_services: IntGauge,
    raft_term: IntGauge,
    raft_leader: IntGauge,
    raft_is_leader: IntGauge,
    pub rpc_seconds: HistogramVec,
    pub rpc_item_errors: IntCounterVec,
    /// Calls refused for want of a role, per method.
    pub rpc_refused: IntCounterVec,
    /// Connections refused at their TLS handshake.
    pub tls_refused: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let by_medium = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["medium"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let alloc_ops = counter(
            "memcache_alloc_operations_total",
            "Total number of allocation operations",
        );
        let remove_ops = counter(
            "memcache_remove_operations_total",
            "Total number of remove operations",
        );
        let get_ops = counter(
            "memcache_get_operations_total",
            "Total number of get operations",
        );
        let evict_ops = counter(
            "memcache_evict_operations_total",
            "Total number of eviction operations",
        );
        let get_hits = counter("memcache_get_hits_total", "Gets that found their object");
        let get_misses = counter("memcache_get_misses_total", "Gets of keys not stored");
        let stored_keys = gauge("memcache_stored_keys", "Current number of stored keys");
        let used_bytes = by_medium("memcache_used_bytes", "Bytes allocated, per medium");
        let capacity_bytes = by_medium("memcache_capacity_bytes", "Bytes registered, per medium");
        let local_services = gauge("memcache_local_services", "Live local services");
        let raft_term = gauge(
            "memcache_meta_raft_term",
            "Current Raft term of this meta node",
        );
        let raft_leader = gauge(
            "memcache_meta_raft_leader_id",
            "Id of the meta group's leader as this node knows it (-1: none)",
        );
        let raft_is_leader = gauge(
            "memcache_meta_raft_is_leader",
            "1 while this meta node leads its group",
        );
        let rpc_seconds = HistogramVec::new(
            HistogramOpts::new(
                "memcache_rpc_duration_seconds",
                "Time the meta service spends on a call, per method",
            )
            .buckets(vec![
                1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1,
            ]),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rpc_seconds.clone()))
            .expect("unique metric");
        let rpc_item_errors = IntCounterVec::new(
            Opts::new(
                "memcache_rpc_item_errors_total",
                "Keys a call answered with an error other than not-found, per method",
            ),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rpc_item_errors.clone()))
            .expect("unique metric");
        let rpc_refused = IntCounterVec::new(
            Opts::new(
                "memcache_rpc_refused_total",
                "Calls refused because the caller's certificate lacks the role, per method",
            ),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(rpc_refused.clone()))
            .expect("unique metric");
        let tls_refused = counter(
            "memcache_tls_handshakes_refused_total",
            "Connections refused at their TLS handshake (no, unknown, expired or revoked certificate)",
        );
        Metrics {
            rpc_refused,
            tls_refused,
            registry,
            alloc_ops,
            remove_ops,
            get_ops,
            evict_ops,
            get_hits,
            get_misses,
            stored_keys,
            used_bytes,
            capacity_bytes,
            local_services,
            raft_term,
            raft_leader,
            raft_is_leader,
            rpc_seconds,
            rpc_item_errors,
        }
    }

    /// Brings the values read from the state up to date (at scrape time, so the hot
    /// path does not pay for them).
    pub fn observe_state(&self, state: &StateMachine) {
        self.stored_keys.set(state.object_count() as i64);
        let evicted = state.counters().evicted;
        let seen = self.evict_ops.get();
        if evicted > seen {
            self.evict_ops.inc_by(evicted - seen);
        }
        for m in Medium::ALL {
            let (used, cap) = state.usage(m);
            self.used_bytes
                .with_label_values(&[m.name()])
                .set(used as i64);
            self.capacity_bytes
                .with_label_values(&[m.name()])
                .set(cap as i64);
        }
    }

    pub fn observe_group(&self, role: &RoleInfo) {
        self.raft_term.set(role.term as i64);
        self.raft_leader
            .set(role.leader.map_or(-1, |l| l.min(i64::MAX as u64) as i64));
        self.raft_is_leader.set((role.role == "leader") as i64);
    }

    pub fn text(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub fn summary(&self) -> String {
        format!(
            "=== MemCache Metrics Summary ===\nAllocation Operations: {}\nRemove Operations: {}\nGet Operations: {}\nEvict Operations: {}\nStored Keys: {}\nGet Hits: {}\nGet Misses: {}\nLocal Services: {}\n",
            self.alloc_ops.get(),
            self.remove_ops.get(),
            self.get_ops.get(),
            self.evict_ops.get(),
            self.stored_keys.get(),
            self.get_hits.get(),
            self.get_misses.get(),
            self.local_services.get(),
        )
    }
}
