//! Deliveries from queue tasks to the socket.

use std::sync::atomic::Ordering;

use amq_protocol::protocol::{basic, AMQPClass};
use ferrymq_amqp::encode;
use ferrymq_core::queue::Delivery;

use crate::channel::{ChannelState, Unacked};
use crate::queue_task::{
    Outbound, QueueCmd, QueueHandle, QueueOp, CONNECTION_BACKLOG_HIGH, CONNECTION_BACKLOG_LOW,
};

use super::*;

impl Connection {
    pub(super) fn handle_outbound(&mut self, o: Outbound) {
        match o {
            Outbound::Deliveries { queue, items } => {
                let n = items.len();
                self.deliver_batch(&queue, items);
                let before = self.backlog.fetch_sub(n, Ordering::Relaxed);
                if before >= CONNECTION_BACKLOG_HIGH {
                    self.backlog_stalled = true;
                }
                if self.backlog_stalled && before - n <= CONNECTION_BACKLOG_LOW {
                    // Queues held back for us: tell them to go on.
                    self.backlog_stalled = false;
                    let mut queues: Vec<QueueHandle> = Vec::new();
                    for c in self.channels.values() {
                        for q in c.consumers.values().filter_map(|x| x.queue.as_ref()) {
                            if !queues.contains(q) {
                                queues.push(q.clone());
                            }
                        }
                    }
                    for q in queues {
                        q.send(QueueCmd::Kick);
                    }
                }
            }
            Outbound::Confirms { channel, seqs, ok } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    if c.state == ChannelState::Open {
                        c.queue_confirmed(&seqs, ok);
                        c.emit_confirms(channel, &mut self.wbuf);
                    }
                }
            }
            Outbound::Returned { channel, msg } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    if c.state == ChannelState::Open {
                        c.counts.return_unroutable += 1;
                        encode::basic_return(
                            &mut self.wbuf,
                            channel,
                            ferrymq_amqp::error::code::NO_ROUTE,
                            "NO_ROUTE",
                            &msg,
                            self.frame_max,
                        );
                    }
                }
            }
            Outbound::Reply { consumer, msg } => {
                let frame_max = self.frame_max;
                let Some((ch, tag)) = self.consumers.get(&consumer) else {
                    return;
                };
                if let Some(c) = self.channels.get_mut(ch) {
                    if c.state == ChannelState::Open {
                        let tag_no = c.skip_tag();
                        encode::deliver(
                            &mut self.wbuf,
                            *ch,
                            tag.as_bytes(),
                            tag_no,
                            false,
                            &msg,
                            frame_max,
                        );
                    }
                }
            }
            Outbound::Cancelled { consumer } => {
                let Some((ch, tag)) = self.consumers.remove(&consumer) else {
                    return;
                };
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.consumers.remove(&tag);
                    c.stats.consumers.lock().retain(|x| x.tag != tag);
                    if c.state == ChannelState::Open && self.caps.consumer_cancel_notify {
                        self.send_method(
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: sstr(&tag),
                                nowait: true,
                            })),
                        );
                    }
                }
            }
        }
    }

    /// Writes a queue's deliveries out: the consumer's channel is looked up once per run
    /// of deliveries to the same consumer (a round's batch is usually one run).
    fn deliver_batch(&mut self, queue: &QueueHandle, items: Vec<Delivery>) {
        let frame_max = self.frame_max;
        let mut items = items.into_iter().peekable();
        while let Some(first) = items.next() {
            let consumer = first.consumer;
            let target = self.consumers.get(&consumer).and_then(|(ch, tag)| {
                let c = self.channels.get_mut(ch)?;
                (c.state == ChannelState::Open).then_some((*ch, tag, c))
            });
            let Some((ch, tag, c)) = target else {
                // The consumer is gone (cancelled or its channel closed): give them back.
                let mut back = vec![first];
                back.extend(std::iter::from_fn(|| {
                    items.next_if(|d| d.consumer == consumer)
                }));
                for d in back.into_iter().filter(|d| d.needs_ack) {
                    self.push_op(
                        queue,
                        QueueOp::Return(d.entry.offset, d.entry.delivery_count),
                    );
                }
                continue;
            };
            let mut d = first;
            loop {
                deliver_to(c, &mut self.wbuf, ch, tag, queue, d, frame_max);
                match items.next_if(|x| x.consumer == consumer) {
                    Some(next) => d = next,
                    None => break,
                }
            }
        }
    }
}

/// Writes one delivery to consumer `tag` on channel `ch` (`c`), recording it for its ack.
fn deliver_to(
    c: &mut crate::channel::Channel,
    wbuf: &mut Vec<u8>,
    ch: u16,
    tag: &str,
    queue: &QueueHandle,
    d: Delivery,
    frame_max: u32,
) {
    if d.needs_ack {
        c.counts.deliver += 1;
    } else {
        c.counts.deliver_no_ack += 1;
    }
    if d.entry.redelivered() {
        c.counts.redeliver += 1;
    }
    let delivery_tag = if d.needs_ack {
        c.push_unacked(Unacked {
            queue: queue.clone(),
            offset: d.entry.offset,
            generation: d.entry.delivery_count,
            consumed: true,
        })
    } else {
        c.skip_tag()
    };
    encode::deliver(
        wbuf,
        ch,
        tag.as_bytes(),
        delivery_tag,
        d.entry.redelivered(),
        &d.entry.msg,
        frame_max,
    );
}
