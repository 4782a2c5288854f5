//! Closing channels and the connection; cleanup when the task ends.

use std::time::Instant;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use ferrymq_amqp::encode;
use ferrymq_amqp::error::AmqpError;

use crate::channel::{ChannelConsumer, ChannelState};
use crate::queue_task::{Outbound, QueueCmd, QueueHandle, QueueOp};

use super::*;

impl Connection {
    pub(super) fn send_method(&mut self, ch: u16, m: AMQPClass) {
        encode::method(&mut self.wbuf, ch, m);
    }

    /// Gives back a channel's deliveries and cancels its consumers.
    /// Removes a closed channel (and its count towards the user's channel limit).
    pub(super) fn forget_channel(&mut self, ch: u16) {
        if let Some(r) = &self.registration {
            r.entry.remove_channel(ch);
        }
        if self.channels.remove(&ch).is_some() && self.channels_counted > 0 {
            self.channels_counted -= 1;
            if let Some(s) = &self.session {
                self.broker.remove_user_channels(s.user_name(), 1);
            }
        }
    }

    pub(super) fn release_channel(&mut self, ch: u16) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.partial = None;
        c.tx = None;
        let consumers: Vec<ChannelConsumer> = c.consumers.drain().map(|(_, v)| v).collect();
        c.stats.consumers.lock().clear();
        let unacked = c.take_all_unacked();
        for consumer in consumers {
            self.consumers.remove(&consumer.id);
            match consumer.queue {
                Some(q) => q.send(QueueCmd::Cancel {
                    consumer: consumer.id,
                    reply: None,
                }),
                None => self.stop_reply_consumer(ch),
            }
        }
        // Requeues travel on the ordered inbox, behind the cancels above, so a queue never
        // hands them back to a consumer of this channel.
        let mut by_queue: Vec<(QueueHandle, Vec<QueueOp>)> = Vec::new();
        for u in unacked {
            match by_queue.iter_mut().find(|(q, _)| *q == u.queue) {
                Some((_, ops)) => ops.push(QueueOp::Return(u.offset, u.generation)),
                None => by_queue.push((u.queue, vec![QueueOp::Return(u.offset, u.generation)])),
            }
        }
        for (q, ops) in by_queue {
            q.send_batch(ops, None);
        }
        self.flush_pending();
    }

    /// Closes a channel with a soft error.
    pub(super) fn close_channel(&mut self, ch: u16, e: AmqpError, class_id: u16, method_id: u16) {
        tracing::debug!(peer = %self.peer, channel = ch, "channel error {}: {}", e.code, e.text);
        if !self.channels.contains_key(&ch) {
            return;
        }
        self.release_channel(ch);
        if let Some(c) = self.channels.get_mut(&ch) {
            c.state = ChannelState::Closing;
        }
        self.send_method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: sstr(&e.reply_text()),
                class_id,
                method_id,
            })),
        );
    }

    /// Closes the connection with a hard error (or 320 on shutdown).
    pub(super) fn close_connection(&mut self, e: AmqpError) {
        if self.phase == Phase::Closing {
            return;
        }
        tracing::debug!(peer = %self.peer, "connection error {}: {}", e.code, e.text);
        let before_open = matches!(
            self.phase,
            Phase::Header | Phase::StartOk | Phase::TuneOk | Phase::Open
        );
        if self.phase == Phase::Header {
            self.phase = Phase::Closing;
            return;
        }
        // A refused login before tune: RabbitMQ closes with the error only if the client
        // asked for authentication_failure_close; sending it is harmless for others.
        let _ = before_open;
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: sstr(&e.reply_text()),
                class_id: e.method.map_or(0, |m| m.0),
                method_id: e.method.map_or(0, |m| m.1),
            })),
        );
        self.phase = Phase::Closing;
        self.closing_since = Some(Instant::now());
    }

    /// Runs when the task ends: requeue, cancel, delete exclusive queues.
    pub(super) async fn cleanup(&mut self) {
        let chans: Vec<u16> = self.channels.keys().copied().collect();
        for ch in chans {
            self.release_channel(ch);
        }
        self.channels.clear();
        for q in std::mem::take(&mut self.exclusive_queues) {
            let _ = q
                .ask(|reply| QueueCmd::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply,
                })
                .await;
        }
        // Deliveries still in flight to us go back to their queues.
        self.outbound_rx.close();
        while let Ok(o) = self.outbound_rx.try_recv() {
            if let Outbound::Deliveries { queue, items } = o {
                for d in items.into_iter().filter(|d| d.needs_ack) {
                    self.push_op(
                        &queue,
                        QueueOp::Return(d.entry.offset, d.entry.delivery_count),
                    );
                }
            }
        }
        self.flush_pending();
        if let Some(s) = &self.session {
            s.vhost
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            self.broker
                .remove_user_connection(s.user_name(), self.channels_counted);
        }
    }
}
