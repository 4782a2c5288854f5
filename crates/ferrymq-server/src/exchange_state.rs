//! State that extension exchange types keep beside the topology: the delay task of each
//! `x-delayed-message` exchange and the cache of each `x-message-deduplication` exchange.
//! Created when such an exchange is declared (or recovered), dropped when it is deleted
//! (a deleted delayed exchange discards its held messages and its log).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ahash::AHashMap;
use ferrymq_core::dedup::{DedupArgs, DedupCache, Persistence};
use ferrymq_core::topology::{ExchangeKind, ExchangeSpec};
use ferrymq_core::CoreError;
use ferrymq_store::dedup_journal::{cache_path, DedupJournal};
use ferrymq_store::delay_log::{self, DelayDir};
use parking_lot::{Mutex, RwLock};

use crate::stats::ExchangeCounters;

use crate::delayed::{self, now_ms, DelayedHandle};
use crate::vhost::VHost;

struct DedupExchange {
    cache: DedupCache,
    journal: Option<DedupJournal>,
    size: usize,
}

#[derive(Default)]
pub struct ExchangeState {
    delayed: Mutex<AHashMap<Arc<str>, DelayedHandle>>,
    dedup: Mutex<AHashMap<Arc<str>, DedupExchange>>,
    /// Message counters of every exchange that was published to (`publish_in`,
    /// `publish_out`); connections add to them once per batch, not per message.
    counters: RwLock<AHashMap<Arc<str>, Arc<ExchangeCounters>>>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> CoreError {
    tracing::error!("{what}: {e}");
    CoreError::Internal(format!("{what}: {e}"))
}

impl ExchangeState {
    /// A new exchange was declared (`dir`: a recovered delay log to reopen).
    pub fn created(
        &self,
        vhost: &Arc<VHost>,
        spec: &ExchangeSpec,
        dir: Option<PathBuf>,
    ) -> Result<(), CoreError> {
        let data_dir = &vhost.dir;
        match spec.kind {
            ExchangeKind::Delayed => {
                let dir = match dir {
                    Some(d) => d,
                    None => delay_log::create_dir(data_dir, &spec.name)
                        .map_err(|e| internal("creating a delay log", e))?,
                };
                let (handle, task) =
                    delayed::create(vhost.clone(), spec.name.clone(), spec.durable, dir)
                        .map_err(|e| internal("opening a delay log", e))?;
                vhost.spawn_owned(task);
                if let Some(old) = self.delayed.lock().insert(spec.name.clone(), handle) {
                    old.discard();
                }
            }
            ExchangeKind::Deduplication => {
                let args = DedupArgs::parse(&spec.arguments)?;
                let mut cache = DedupCache::new(args.size, args.ttl);
                let journal = if args.persistence == Persistence::Disk {
                    let path = cache_path(data_dir, &spec.name);
                    let (mut j, entries) = DedupJournal::open(&path)
                        .map_err(|e| internal("opening a de-duplication cache", e))?;
                    let now = now_ms();
                    for (k, exp) in entries.iter().filter(|(_, exp)| *exp > now) {
                        cache.restore(k, *exp);
                    }
                    if j.entries() > cache.len() {
                        j.rewrite(cache.live(now))
                            .map_err(|e| internal("compacting a de-duplication cache", e))?;
                    }
                    Some(j)
                } else {
                    None
                };
                self.dedup.lock().insert(
                    spec.name.clone(),
                    DedupExchange {
                        cache,
                        journal,
                        size: args.size,
                    },
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// A durable exchange came back from the definitions journal.
    pub fn recovered(
        &self,
        vhost: &Arc<VHost>,
        spec: &ExchangeSpec,
        found: &mut Recovery,
    ) -> Result<(), CoreError> {
        match spec.kind {
            ExchangeKind::Delayed => {
                let dir = found.take_delayed(&spec.name);
                self.created(vhost, spec, dir)
            }
            ExchangeKind::Deduplication => {
                found.claim_dedup(&cache_path(&vhost.dir, &spec.name));
                self.created(vhost, spec, None)
            }
            _ => Ok(()),
        }
    }

    /// The counters of exchange `name` (created on first use).
    pub fn counters(&self, name: &str) -> Arc<ExchangeCounters> {
        if let Some(c) = self.counters.read().get(name) {
            return c.clone();
        }
        self.counters
            .write()
            .entry(Arc::from(name))
            .or_default()
            .clone()
    }

    /// `(publish_in, publish_out)` of exchange `name` (zeros if it never saw a message).
    pub fn counts(&self, name: &str) -> (u64, u64) {
        self.counters.read().get(name).map_or((0, 0), |c| c.load())
    }

    /// `(name, publish_in, publish_out)` of every exchange that saw a message.
    pub fn all_counts(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.counters
            .read()
            .iter()
            .map(|(name, c)| {
                let (i, o) = c.load();
                (name.clone(), i, o)
            })
            .collect()
    }

    /// The exchange is gone: discard its held messages or cache.
    pub fn removed(&self, name: &str) {
        self.counters.write().remove(name);
        if let Some(h) = self.delayed.lock().remove(name) {
            h.discard();
        }
        if let Some(d) = self.dedup.lock().remove(name) {
            if let Some(j) = d.journal {
                let _ = std::fs::remove_file(j.path());
            }
        }
    }

    pub fn delayed(&self, name: &str) -> Option<DelayedHandle> {
        self.delayed.lock().get(name).cloned()
    }

    /// Entries in a de-duplication exchange's cache (`None` for other exchanges).
    pub fn dedup_size(&self, name: &str) -> Option<usize> {
        self.dedup.lock().get(name).map(|d| d.cache.len())
    }

    pub fn dedup_seen(&self, name: &str, key: &[u8], ttl: Option<u64>) -> bool {
        let mut map = self.dedup.lock();
        let Some(d) = map.get_mut(name) else {
            return false;
        };
        let now = now_ms();
        let (seen, expires) = d.cache.check(key, now, ttl);
        if !seen {
            if let Some(j) = &mut d.journal {
                let r = if j.entries() >= 2 * d.size + 1024 {
                    // The compaction fsyncs: off the async worker.
                    let live = d.cache.live(now);
                    crate::blocking::run(|| j.rewrite(live))
                } else {
                    j.append(key, expires)
                };
                if let Err(e) = r {
                    tracing::warn!(exchange = name, "writing the de-duplication cache: {e}");
                }
            }
        }
        seen
    }

    /// Shutdown: delay tasks stop (keeping their logs); caches are fsynced.
    pub fn stop_all(&self) {
        for h in self.delayed.lock().values() {
            h.stop();
        }
        for d in self.dedup.lock().values() {
            if let Some(j) = &d.journal {
                let _ = j.sync();
            }
        }
    }
}

/// Extension exchange files found on disk at start; whatever no recovered exchange
/// claims (deleted exchanges, transient ones of the last run) is removed.
pub struct Recovery {
    delayed: Vec<DelayDir>,
    dedup: Vec<PathBuf>,
}

impl Recovery {
    pub fn scan(data_dir: &Path) -> Recovery {
        let dedup = std::fs::read_dir(data_dir.join("dedup"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        Recovery {
            delayed: delay_log::list_dirs(data_dir),
            dedup,
        }
    }

    /// The newest delay log of `exchange` (older ones are leftovers of a delete).
    fn take_delayed(&mut self, exchange: &str) -> Option<PathBuf> {
        let i = self.delayed.iter().rposition(|d| d.exchange == exchange)?;
        Some(self.delayed.remove(i).path)
    }

    fn claim_dedup(&mut self, path: &Path) {
        self.dedup.retain(|p| p != path);
    }

    pub fn remove_unclaimed(self) {
        for d in self.delayed {
            tracing::info!(dir = %d.path.display(), exchange = d.exchange, "removing the delay log of a deleted or transient exchange");
            let _ = std::fs::remove_dir_all(&d.path);
        }
        for p in self.dedup {
            let _ = std::fs::remove_file(&p);
        }
    }
}
