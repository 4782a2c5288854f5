//! A queue task and its store: opening and recovering a durable queue's log, the fsync
//! pipeline that releases publisher confirms, and paging the in-memory head to and
//! from disk under the broker-wide memory budget.

use super::*;

impl QueueTask {
    /// Opens a durable queue's log and restores the messages it holds. The disk work runs
    /// with `block_in_place` so other tasks move off this worker meanwhile.
    pub(super) fn open_store(&mut self) {
        let data_dir = self.vhost.dir.clone();
        let name = self.me.name().to_owned();
        let track_times = self.args.message_ttl.is_some();
        let dedup = self.args.deduplication;
        let opened = tokio::task::block_in_place(|| {
            let mut store = ferrymq_store::queue_log::LogStore::open(&data_dir, &name)?;
            store.track_times(track_times);
            let recovered = store.recover()?;
            // A de-duplicating queue rebuilds the keys of every message it holds.
            let mut keys = Vec::new();
            if dedup {
                let key = |m: &Message| {
                    let p = ferrymq_core::props::parse(&m.raw_properties)?;
                    ferrymq_core::dedup::dedup_key(p.headers().as_ref())
                };
                for (o, m) in &recovered.messages {
                    if let Some(k) = key(m) {
                        keys.push((*o, k));
                    }
                }
                for chunk in recovered.paged.chunks(4096) {
                    for (o, m) in store.read(chunk)? {
                        if let Some(k) = key(&m) {
                            keys.push((o, k));
                        }
                    }
                }
            }
            Ok::<_, ferrymq_store::StoreError>((store, recovered, keys))
        });
        match opened {
            Ok((store, recovered, keys)) => {
                if let Some(d) = &mut self.dedup {
                    for (o, k) in keys {
                        d.insert(o, k);
                    }
                }
                if !recovered.messages.is_empty() || recovered.dropped_transient > 0 {
                    tracing::info!(
                        queue = %name,
                        messages = recovered.messages.len() + recovered.paged.len(),
                        dropped_transient = recovered.dropped_transient,
                        "recovered queue"
                    );
                }
                self.state.restore(
                    recovered.next_offset,
                    recovered.messages,
                    recovered.paged,
                    &recovered.paged_priority,
                    recovered.paged_bytes,
                );
                // Expiry deadlines count from the original enqueue time.
                let expiries: Vec<(Offset, u64, u32)> = recovered
                    .times
                    .iter()
                    .filter_map(|&(offset, at, msg_ttl, size)| {
                        let ttl = self.args.ttl_for(msg_ttl)?;
                        let at = u64::try_from(at).unwrap_or(0).saturating_add(ttl).max(1);
                        Some((offset, at, size))
                    })
                    .collect();
                self.state.restore_expiry(&expiries);
                self.store = Box::new(store);
            }
            Err(e) => {
                // Nothing this queue takes could be made durable: it nacks publishes
                // (confirming them would lose them at the next restart or power cut).
                tracing::error!(queue = %name, "cannot open the queue's log, refusing publishes until restart: {e}");
                let dir = ferrymq_store::queue_log::queue_dir(&data_dir, &name);
                self.store = Box::new(ferrymq_store::FailedStore::new(
                    dir.display().to_string(),
                    e.to_string(),
                ));
            }
        }
    }

    /// Makes this round's writes durable as the fsync policy says, then confirms the
    /// publishes that waited for it: under `always` after an fsync covering them, under
    /// `interval` and `never` once handed to the OS (an `interval` fsync runs when due).
    ///
    /// Under `always` the fsync runs on the disk's sync worker (`ferrymq_store::sync_worker`,
    /// batched with other queues' fsyncs) while this task goes on
    /// appending and dispatching; its publishes are confirmed when it completes
    /// (`fsync_done`). One fsync at a time: publishes stored meanwhile wait for the next,
    /// which starts as soon as the running one is done and covers all of them (group
    /// commit). `fsync` is `None` when no fsync may be left running (the task is ending).
    pub(super) fn sync_and_confirm(&mut self, fsync: Option<&mut Option<InFlightSync>>) {
        if !self.store.needs_sync() && self.confirms.is_empty() {
            return;
        }
        if self.policy == FsyncPolicy::Always {
            let Some(slot) = fsync else {
                let ok = match tokio::task::block_in_place(|| self.store.sync()) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(queue = self.me.name(), "store sync failed: {e}");
                        false
                    }
                };
                let confirms = std::mem::take(&mut self.confirms);
                confirms.send(ok);
                return;
            };
            if slot.is_some() {
                return;
            }
            match self.store.begin_sync() {
                Ok(None) => std::mem::take(&mut self.confirms).send(true),
                Ok(Some(work)) => {
                    // The disk's sync worker runs it, coalesced with other logs' fsyncs.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.sync_worker().submit(
                        work,
                        Box::new(move |work| {
                            let _ = tx.send(work);
                        }),
                    );
                    *slot = Some(InFlightSync {
                        confirms: std::mem::take(&mut self.confirms),
                        work: rx,
                    });
                }
                Err(e) => {
                    tracing::error!(queue = self.me.name(), "store write failed: {e}");
                    std::mem::take(&mut self.confirms).send(false);
                }
            }
            return;
        }
        let due = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
            FsyncPolicy::Never => false,
        };
        // An fsync may take milliseconds: let the runtime move other tasks off this
        // worker meanwhile. A flush is a write into the page cache and runs inline.
        let result = if due {
            tokio::task::block_in_place(|| self.store.sync())
        } else {
            self.store.flush()
        };
        if due {
            self.last_sync = std::time::Instant::now();
        }
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(queue = self.me.name(), "store write failed: {e}");
                false
            }
        };
        std::mem::take(&mut self.confirms).send(ok);
    }

    /// An fsync begun by `sync_and_confirm` completed: the publishes it covered are
    /// confirmed, or nacked if it failed.
    pub(super) fn fsync_done(
        &mut self,
        confirms: Confirms,
        work: Result<Box<dyn SyncWork>, tokio::sync::oneshot::error::RecvError>,
    ) {
        let result = match work {
            Ok(work) => self.store.finish_sync(work),
            // The job never came back: its fsync did not run (or the worker died in it).
            Err(_) => Err(ferrymq_store::StoreError::Io {
                path: self.me.name().to_owned(),
                source: std::io::Error::other("the sync worker dropped the fsync"),
            }),
        };
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(queue = self.me.name(), "store sync failed: {e}");
                false
            }
        };
        confirms.send(ok);
    }

    /// Holds the in-memory head to this queue's limit: its own maximum (`HEAD_BYTES`), or
    /// its fair share of the broker-wide budget, minus what its unacked deliveries and
    /// delayed retries hold, while queues together hold more than half of it. What is over
    /// the limit is paged out (the messages served last first), then the head's cost plus
    /// the held bytes are reported to the budget. A few atomics per round.
    pub(super) fn balance_memory(&mut self) {
        // Unacked deliveries and delayed retries cannot page but count against the budget:
        // while it is constrained, the head makes room for them.
        let held = self.state.held_cost();
        let limit = self.memory.head_limit_holding(HEAD_BYTES, held);
        self.state.set_head_limit(limit);
        if self.state.head_cost() > limit && self.store.can_page() {
            let store = &mut self.store;
            let name = self.me.name();
            tokio::task::block_in_place(|| {
                self.state.page_out(limit, |msgs| match store.spill(msgs) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(queue = name, "paging to disk failed: {e}");
                        false
                    }
                })
            });
        }
        self.memory.report(self.state.head_cost() + held);
    }

    /// Refills the in-memory head of a queue's backlog from its store.
    pub(super) fn page_in(&mut self) {
        let Some(wanted) = self.state.page_in_request() else {
            return;
        };
        match tokio::task::block_in_place(|| self.store.read(&wanted)) {
            Ok(msgs) => {
                let lost = self.state.page_in(&wanted, msgs);
                if lost > 0 {
                    tracing::error!(
                        queue = self.me.name(),
                        lost,
                        "stored messages could not be read back"
                    );
                }
            }
            Err(e) => tracing::error!(queue = self.me.name(), "reading stored messages: {e}"),
        }
    }
}

/// An fsync running on the disk's sync worker, and the publishes waiting for it.
pub(super) struct InFlightSync {
    pub(super) confirms: Confirms,
    pub(super) work: tokio::sync::oneshot::Receiver<Box<dyn SyncWork>>,
}

impl QueueTask {
    /// The sync worker of the disk this queue's data dir is on (looked up once).
    fn sync_worker(&mut self) -> std::sync::Arc<ferrymq_store::sync_worker::SyncWorker> {
        self.sync_worker
            .get_or_insert_with(|| {
                ferrymq_store::sync_worker::SyncWorker::for_path(&self.vhost.dir)
            })
            .clone()
    }
}
