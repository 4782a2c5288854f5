//! A queue task's dispatch round: hands ready messages to consumers with room and sends
//! each connection its deliveries as one batch.

use super::*;

impl QueueTask {
    pub(super) fn dispatch(&mut self, out: &mut Vec<Delivery>) {
        if self.consumers.is_empty() {
            return;
        }
        // Consumers handed something this round (their tallies are settled at its end).
        let mut touched: Vec<ConsumerId> = Vec::new();
        // Deliver, refilling the in-memory head from the store whenever consumers still
        // take messages and the head ran low.
        loop {
            self.page_in();
            let before = out.len();
            let consumers = &self.consumers;
            let touched = &mut touched;
            self.state.dispatch(
                |id| {
                    let Some(link) = consumers.get(&id) else {
                        return false;
                    };
                    let t = &link.round;
                    let n = t.delivered.get();
                    if n == 0 {
                        // First delivery to it this round: read the shared counters once.
                        t.backlog_seen.set(link.backlog.load(Ordering::Relaxed));
                        t.unlimited.set(link.no_ack || link.credit.limit() == 0);
                    }
                    if t.backlog_seen.get() + n >= CONNECTION_BACKLOG_HIGH {
                        return false;
                    }
                    let ok = if link.no_ack {
                        true
                    } else if t.unlimited.get() {
                        t.credit_owed.set(t.credit_owed.get() + 1);
                        true
                    } else {
                        link.credit.try_acquire()
                    };
                    if ok {
                        if n == 0 {
                            touched.push(id);
                        }
                        t.delivered.set(n + 1);
                    }
                    ok
                },
                out,
            );
            if out.len() == before || self.state.page_in_request().is_none() {
                break;
            }
        }
        // The round's tallies go to the shared counters before the deliveries leave (the
        // connection subtracts what it receives).
        for id in &touched {
            if let Some(link) = self.consumers.get(id) {
                let t = &link.round;
                link.backlog
                    .fetch_add(t.delivered.take(), Ordering::Relaxed);
                let owed = t.credit_owed.take();
                if owed > 0 {
                    link.credit.take_unchecked(owed);
                }
            }
        }
        if out.is_empty() {
            return;
        }
        for d in out.iter() {
            if d.needs_ack {
                self.counts.deliver += 1;
            } else {
                self.counts.deliver_no_ack += 1;
            }
            if d.entry.redelivered() {
                self.counts.redeliver += 1;
            }
        }
        if self.args.queue_type == QueueType::Quorum {
            for d in out.iter_mut() {
                self.annotate(&mut d.entry);
            }
        }
        // Deliveries to no-ack consumers are settled as they leave.
        let settled: Vec<Offset> = out
            .iter()
            .filter(|d| !d.needs_ack)
            .map(|d| d.entry.offset)
            .collect();
        if !settled.is_empty() {
            self.forget(&settled);
        }
        // One batch per connection, in delivery order.
        let mut batches: Vec<(u64, Vec<Delivery>)> = Vec::new();
        if touched.len() == 1 {
            // One consumer this round (the common case): one batch, no grouping.
            // The next round starts with room for as many (no regrowth from empty).
            let room = out.len();
            batches.push((0, std::mem::replace(out, Vec::with_capacity(room))));
        } else {
            let mut last: Option<(ConsumerId, usize)> = None;
            for d in out.drain(..) {
                let i = match last {
                    Some((c, i)) if c == d.consumer => i,
                    _ => {
                        let Some(link) = self.consumers.get(&d.consumer) else {
                            continue;
                        };
                        let i = match batches.iter().position(|(c, _)| *c == link.connection) {
                            Some(i) => i,
                            None => {
                                batches.push((link.connection, Vec::new()));
                                batches.len() - 1
                            }
                        };
                        last = Some((d.consumer, i));
                        i
                    }
                };
                batches[i].1.push(d);
            }
        }
        let mut undelivered = Vec::new();
        for (_, items) in batches {
            let Some(link) = self.consumers.get(&items[0].consumer) else {
                continue;
            };
            let sent = link.outbound.send(Outbound::Deliveries {
                queue: self.me.clone(),
                items,
            });
            if let Err(mpsc::error::SendError(Outbound::Deliveries { items, .. })) = sent {
                undelivered.extend(items);
            }
        }
        if undelivered.is_empty() {
            return;
        }
        // The consumer's connection is gone (its cancel is still on the way): take the
        // messages back, drop its consumers, and offer the messages to the others.
        for d in &undelivered {
            if let Some(link) = self.consumers.remove(&d.consumer) {
                self.state.remove_consumer(link.id);
            }
        }
        let offsets: Vec<Offset> = undelivered
            .iter()
            .filter(|d| d.needs_ack)
            .map(|d| d.entry.offset)
            .collect();
        self.state.reject(&offsets, true);
        self.dispatch(out);
    }
}
