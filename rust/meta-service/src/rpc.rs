//! The tarpc face of the meta service: every call counted, timed and traced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tarpc::context::Context;

use memcache_core::{Error, Key, KeyInfo, LocalServiceId, Medium, ReplicateConfig, Result};
use memcache_meta::{Allocation, LeaseId, Located, PutId};
use memcache_proto::{
    DataEndpoint, MetaRpc, MetaStats, Registered, Registration, SegmentView, TagKey, TraceRow,
};

use crate::ptracer::Tp;
use crate::{Live, Shared};

/// How many keys of an answer are real failures (not-found and already-exists are
/// answers, not failures).
pub trait Outcome {
    fn item_errors(&self) -> u64;
}

fn failure(e: &Error) -> bool {
    !matches!(e, Error::ObjectNotFound | Error::DuplicatedObject)
}

impl<T> Outcome for Result<T> {
    fn item_errors(&self) -> u64 {
        self.as_ref().err().is_some_and(failure) as u64
    }
}

impl<T> Outcome for Vec<Result<T>> {
    fn item_errors(&self) -> u64 {
        self.iter()
            .filter(|r| r.as_ref().err().is_some_and(failure))
            .count() as u64
    }
}

impl Outcome for Vec<KeyInfo> {
    fn item_errors(&self) -> u64 {
        self.iter()
            .filter(|i| Error::from_code(i.status).is_some_and(|e| failure(&e)))
            .count() as u64
    }
}

macro_rules! no_errors {
    ($($t:ty),*) => { $(impl Outcome for $t { fn item_errors(&self) -> u64 { 0 } })* };
}
no_errors!(
    (),
    MetaStats,
    Vec<SegmentView>,
    Vec<Key>,
    Vec<TraceRow>,
    Vec<(LocalServiceId, DataEndpoint)>
);

#[derive(Clone)]
pub struct Server(pub Arc<Shared>);

impl Server {
    pub fn segment_views(&self) -> Vec<SegmentView> {
        let store = self.0.store();
        store
            .state()
            .segments()
            .map(|s| SegmentView {
                id: s.id,
                service: s.service,
                medium: s.spec.medium,
                capacity: s.capacity(),
                used: s.used(),
            })
            .collect()
    }

    pub fn stats_now(&self) -> MetaStats {
        let rpcs = self.0.rpcs.load(Ordering::Relaxed);
        let by_method = self
            .0
            .by_method
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let store = self.0.store();
        let state = store.state();
        let (used, capacity) = Medium::ALL
            .iter()
            .map(|m| state.usage(*m))
            .fold((0, 0), |(u, c), (mu, mc)| (u + mu, c + mc));
        MetaStats {
            rpcs,
            by_method,
            objects: state.object_count() as u64,
            services: state.services().count() as u64,
            used_bytes: used,
            capacity_bytes: capacity,
        }
    }

    pub fn keys_with_prefix(&self, prefix: &[u8], limit: usize) -> Vec<Key> {
        let now = self.0.clock.now_ms();
        self.0.store().state().keys_with_prefix(prefix, now, limit)
    }
}

impl MetaRpc for Server {
    async fn register_service(self, _: Context, reg: Registration) -> Result<Registered> {
        self.0.traced("register_service", Tp::BmRegister, |_| {
            let (id, segments) =
                self.0
                    .store()
                    .register_service(reg.requested, reg.device_id, reg.segments)?;
            let key: TagKey = rand::random();
            let live = Live {
                endpoint: reg.endpoint,
                last_beat: Instant::now(),
                key,
            };
            self.0.live().insert(id, live);
            tracing::info!(service = id, ?segments, "local service joined");
            Ok(Registered { id, segments, key })
        })
    }

    async fn heartbeat(self, _: Context, service: LocalServiceId) -> Result<()> {
        self.0.traced("heartbeat", Tp::Heartbeat, |_| {
            match self.0.live().get_mut(&service) {
                Some(l) => {
                    l.last_beat = Instant::now();
                    Ok(())
                }
                None => Err(Error::NotConnectedToLocal),
            }
        })
    }

    async fn unregister_service(self, _: Context, service: LocalServiceId) -> Result<usize> {
        self.0.traced("unregister_service", Tp::BmUnregister, |_| {
            self.0.live().remove(&service);
            self.0.store().remove_service(service)
        })
    }

    async fn endpoints(self, _: Context) -> Vec<(LocalServiceId, DataEndpoint)> {
        self.0.traced("endpoints", Tp::Query, |_| {
            let live = self.0.live();
            live.iter()
                .map(|(id, l)| (*id, l.endpoint.clone()))
                .collect()
        })
    }

    async fn alloc(
        self,
        _: Context,
        items: Vec<(Key, u64)>,
        config: ReplicateConfig,
    ) -> Vec<Result<Allocation>> {
        let tp = Tp::sized(Tp::Put, Tp::BatchPut, items.len());
        self.0.traced("alloc", tp, |now| {
            let mut out = self.0.store().alloc(items, &config, now);
            for a in out.iter_mut().flatten() {
                a.tags = self.0.tags(&a.blobs, true);
            }
            let done = out.iter().filter(|r| r.is_ok()).count();
            self.0.metrics.alloc_ops.inc_by(done as u64);
            out
        })
    }

    async fn commit(self, _: Context, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        let tp = Tp::sized(Tp::Update, Tp::BatchUpdate, items.len());
        self.0
            .traced("commit", tp, |now| self.0.store().commit(items, now))
    }

    async fn abort(self, _: Context, items: Vec<(Key, PutId)>) -> Vec<Result<()>> {
        self.0
            .traced("abort", Tp::Abort, |_| self.0.store().abort(items))
    }

    async fn lookup(self, _: Context, keys: Vec<Key>) -> Vec<Result<Located>> {
        let tp = Tp::sized(Tp::Get, Tp::BatchGet, keys.len());
        self.0.traced("lookup", tp, |now| {
            let mut out = self.0.store().lookup(&keys, now);
            let hits = out.iter().filter(|r| r.is_ok()).count() as u64;
            let m = &self.0.metrics;
            m.get_ops.inc_by(keys.len() as u64);
            m.get_hits.inc_by(hits);
            m.get_misses.inc_by(keys.len() as u64 - hits);
            for l in out.iter_mut().flatten() {
                l.tags = self.0.tags(&l.blobs, false);
            }
            out
        })
    }

    async fn release(self, _: Context, leases: Vec<(Key, LeaseId)>) {
        self.0
            .traced("release", Tp::Release, |_| self.0.store().release(&leases))
    }

    async fn remove(self, _: Context, keys: Vec<Key>) -> Vec<Result<()>> {
        let tp = Tp::sized(Tp::Remove, Tp::BatchRemove, keys.len());
        self.0.traced("remove", tp, |now| {
            let out = self.0.store().remove(keys, now);
            let done = out.iter().filter(|r| r.is_ok()).count();
            self.0.metrics.remove_ops.inc_by(done as u64);
            out
        })
    }

    async fn exists(self, _: Context, keys: Vec<Key>) -> Vec<Result<bool>> {
        self.0
            .traced("exists", Tp::Exist, |now| self.0.store().exists(&keys, now))
    }

    async fn key_info(self, _: Context, keys: Vec<Key>) -> Vec<KeyInfo> {
        self.0.traced("key_info", Tp::Query, |now| {
            self.0.store().key_info(&keys, now)
        })
    }

    async fn stats(self, _: Context) -> MetaStats {
        self.0.traced("stats", Tp::Query, |_| ());
        self.stats_now()
    }

    async fn segments(self, _: Context) -> Vec<SegmentView> {
        self.0
            .traced("segments", Tp::Query, |_| self.segment_views())
    }

    async fn keys(self, _: Context, prefix: Vec<u8>, limit: u32) -> Vec<Key> {
        self.0.traced("keys", Tp::Query, |_| {
            self.keys_with_prefix(&prefix, limit as usize)
        })
    }

    async fn tracepoints(self, _: Context) -> Vec<TraceRow> {
        self.0
            .traced("tracepoints", Tp::Query, |_| self.0.tracer.rows())
    }
}
