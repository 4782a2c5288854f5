//! The `basic` class except publishing: qos, consume, cancel, get, recover, ack/nack/reject.

use amq_protocol::protocol::{basic, AMQPClass};
use ferrymq_amqp::encode;
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_core::queue::ConsumerId;
use ferrymq_core::CoreError;

use crate::channel::{ChannelConsumer, Settle, Unacked};
use crate::queue_task::{ConsumerLink, QueueCmd, QueueHandle, QueueOp};
use crate::vhost::ReplyConsumer;

use super::*;

impl Connection {
    pub(super) async fn basic_class(&mut self, ch: u16, m: basic::AMQPMethod) -> Result<()> {
        use basic::AMQPMethod as M;
        match m {
            M::Qos(q) => {
                // RabbitMQ's meaning: `global` is the channel's shared limit, otherwise
                // the prefetch of consumers created afterwards. For a client that reads
                // the spec (`ClientCaps::spec_qos`), `global=false` already means the
                // channel, and RabbitMQ has nothing wider, so both are the channel's limit.
                let channel_wide = q.global || self.caps.spec_qos;
                let c = self.open_channel(ch)?;
                if channel_wide {
                    c.credit.set_limit(q.prefetch_count as u32);
                    let queues: Vec<QueueHandle> = c
                        .consumers
                        .values()
                        .filter_map(|x| x.queue.clone())
                        .collect();
                    for q in queues {
                        q.send(QueueCmd::Kick);
                    }
                } else {
                    c.consumer_prefetch = q.prefetch_count as u32;
                }
                self.send_method(ch, AMQPClass::Basic(M::QosOk(basic::QosOk {})));
            }
            M::Consume(c) => self.consume(ch, c).await?,
            M::Cancel(c) => {
                let tag = c.consumer_tag.as_str().to_owned();
                let chan = self.open_channel(ch)?;
                chan.stats.consumers.lock().retain(|x| x.tag != tag);
                let consumer = chan.consumers.remove(&tag);
                if let Some(consumer) = consumer {
                    self.consumers.remove(&consumer.id);
                    match &consumer.queue {
                        Some(q) => {
                            q.ask(|reply| QueueCmd::Cancel {
                                consumer: consumer.id,
                                reply: Some(reply),
                            })
                            .await;
                        }
                        None => self.stop_reply_consumer(ch),
                    }
                }
                if !c.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Basic(M::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            M::Get(g) => {
                let conn = self.id;
                let q = self.session()?.queue_to_read(g.queue.as_str(), conn)?;
                let Some(r) = q
                    .ask(|reply| QueueCmd::Get {
                        no_ack: g.no_ack,
                        reply,
                    })
                    .await
                else {
                    let vhost = &self.vh()?.name;
                    return Err(CoreError::not_found("queue", g.queue.as_str(), vhost).into());
                };
                match r {
                    None => {
                        self.open_channel(ch)?.counts.get_empty += 1;
                        self.send_method(ch, AMQPClass::Basic(M::GetEmpty(basic::GetEmpty {})))
                    }
                    Some((entry, remaining)) => {
                        let frame_max = self.frame_max;
                        let c = self.open_channel(ch)?;
                        if g.no_ack {
                            c.counts.get_no_ack += 1;
                        } else {
                            c.counts.get += 1;
                        }
                        if entry.redelivered() {
                            c.counts.redeliver += 1;
                        }
                        let tag = if g.no_ack {
                            c.skip_tag()
                        } else {
                            c.push_unacked(Unacked {
                                queue: q,
                                offset: entry.offset,
                                generation: entry.delivery_count,
                                consumed: false,
                            })
                        };
                        encode::get_ok(
                            &mut self.wbuf,
                            ch,
                            tag,
                            entry.redelivered(),
                            remaining as u32,
                            &entry.msg,
                            frame_max,
                        );
                    }
                }
            }
            M::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "requeue=false"));
                }
                self.requeue_all(ch);
                self.send_method(ch, AMQPClass::Basic(M::RecoverOk(basic::RecoverOk {})));
            }
            M::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "requeue=false"));
                }
                self.requeue_all(ch);
            }
            other => {
                return Err(AmqpError::new(
                    code::COMMAND_INVALID,
                    format!("unexpected {other:?}"),
                ))
            }
        }
        Ok(())
    }

    pub(super) async fn consume(&mut self, ch: u16, c: basic::Consume) -> Result<()> {
        if c.queue.as_str() == DIRECT_REPLY_TO {
            return self.consume_direct_reply_to(ch, c);
        }
        let conn = self.id;
        let q = self.session()?.queue_to_read(c.queue.as_str(), conn)?;
        let mut tag = c.consumer_tag.as_str().to_owned();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        let id = ConsumerId(self.broker.next_id());
        let (conn_id, outbound, backlog) =
            (self.id, self.outbound_tx.clone(), self.backlog.clone());
        let consumer_max = self.broker.config.consumer_max_per_channel;
        let chan = self.open_channel(ch)?;
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        if let Some(max) = consumer_max {
            if chan.consumers.len() >= max {
                return Err(AmqpError::new(
                    code::NOT_ALLOWED,
                    format!("reached maximum ({max}) of consumers per channel"),
                ));
            }
        }
        let link = ConsumerLink {
            id,
            connection: conn_id,
            outbound,
            credit: chan.credit.clone(),
            backlog,
            no_ack: c.no_ack,
            round: Default::default(),
        };
        let prefetch = chan.consumer_prefetch;
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => ferrymq_core::topology::int_value(v).ok_or_else(|| {
                AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "invalid arg 'x-priority' for consumer on queue '{}'",
                        c.queue
                    ),
                )
            })?,
        };
        let Some(r) = q
            .ask(|reply| QueueCmd::Consume {
                link,
                prefetch,
                exclusive: c.exclusive,
                priority,
                reply,
            })
            .await
        else {
            let vhost = &self.vh()?.name;
            return Err(CoreError::not_found("queue", c.queue.as_str(), vhost).into());
        };
        if let Err(e) = r {
            return Err(match e {
                CoreError::AccessRefused(_) => AmqpError::new(
                    code::ACCESS_REFUSED,
                    format!(
                        "queue '{}' in vhost '{}' in exclusive use",
                        c.queue,
                        self.vh()?.name
                    ),
                ),
                e => e.into(),
            });
        }
        let chan = self.open_channel(ch)?;
        chan.stats
            .consumers
            .lock()
            .push(crate::stats::ConsumerInfo {
                tag: tag.clone(),
                queue: q.name().to_owned(),
                ack_required: !c.no_ack,
                exclusive: c.exclusive,
                prefetch_count: prefetch,
                arguments: c.arguments.clone(),
            });
        chan.consumers
            .insert(tag.clone(), ChannelConsumer { id, queue: Some(q) });
        self.consumers.insert(id, (ch, tag.clone()));
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: sstr(&tag),
                })),
            );
        }
        Ok(())
    }

    /// `basic.consume` from `amq.rabbitmq.reply-to`: a pseudo consumer that receives
    /// replies published to this channel's private reply name, without acks.
    pub(super) fn consume_direct_reply_to(&mut self, ch: u16, c: basic::Consume) -> Result<()> {
        if !c.no_ack {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        let id = ConsumerId(self.broker.next_id());
        let outbound = self.outbound_tx.clone();
        let mut tag = c.consumer_tag.as_str().to_owned();
        if tag.is_empty() {
            tag = random_name("amq.ctag-");
        }
        let chan = self.open_channel(ch)?;
        if chan.reply_name.is_some() {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "reply consumer already set",
            ));
        }
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let name = random_name(&format!("{DIRECT_REPLY_TO}."));
        chan.reply_name = Some(name.clone());
        chan.consumers
            .insert(tag.clone(), ChannelConsumer { id, queue: None });
        self.consumers.insert(id, (ch, tag.clone()));
        self.vh()?.register_reply_to(
            name,
            ReplyConsumer {
                consumer: id,
                outbound,
            },
        );
        if !c.nowait {
            self.send_method(
                ch,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: sstr(&tag),
                })),
            );
        }
        Ok(())
    }

    pub(super) fn stop_reply_consumer(&mut self, ch: u16) {
        if let Some(name) = self.channels.get_mut(&ch).and_then(|c| c.reply_name.take()) {
            if let Some(s) = &self.session {
                let v = &s.vhost;
                v.unregister_reply_to(&name);
            }
        }
    }

    pub(super) fn requeue_all(&mut self, ch: u16) {
        if let Some(c) = self.channels.get_mut(&ch) {
            let all = c.take_all_unacked();
            let credit = c.credit.clone();
            let consumed = all.iter().filter(|u| u.consumed).count() as u32;
            credit.release(consumed);
            for u in all {
                self.push_op(&u.queue, QueueOp::Return(u.offset, u.generation));
            }
        }
    }

    // ---- ack / nack / reject ----------------------------------------------------------

    pub(super) fn settle(&mut self, ch: u16, tag: u64, multiple: bool, how: Settle) -> Result<()> {
        let c = self.open_channel(ch)?;
        if let Some(tx) = &mut c.tx {
            // Validate now, apply at commit.
            let known = tag == 0 && multiple
                || (tag >= c.unacked_base
                    && matches!(
                        c.unacked.get((tag - c.unacked_base) as usize),
                        Some(Some(_))
                    ));
            if !known {
                let e = AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!("unknown delivery tag {tag}"),
                );
                self.close_channel(ch, e, 60, 80);
                return Ok(());
            }
            tx.settles.push((tag, multiple, how));
            return Ok(());
        }
        self.apply_settle(ch, tag, multiple, how)
    }

    pub(super) fn apply_settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
    ) -> Result<()> {
        let c = self.open_channel(ch)?;
        let Some(done) = c.take_settled(tag, multiple) else {
            let (cls, mth) = match how {
                Settle::Ack => (60, 80),
                _ => (60, 120),
            };
            let e = AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            );
            self.close_channel(ch, e, cls, mth);
            return Ok(());
        };
        let consumed = done.iter().filter(|u| u.consumed).count() as u32;
        if how == Settle::Ack {
            c.counts.ack += done.len() as u64;
        }
        let was_full = c.credit.release(consumed);
        let kick: Vec<QueueHandle> = if was_full {
            c.consumers
                .values()
                .filter_map(|x| x.queue.clone())
                .collect()
        } else {
            Vec::new()
        };
        // Consecutive deliveries mostly come from one queue: one batch per run of them.
        let mut left = done.len();
        let mut run: Option<(QueueHandle, Vec<QueueOp>)> = None;
        for u in done {
            let op = match how {
                Settle::Ack => QueueOp::Ack(u.offset, u.generation),
                Settle::Requeue => QueueOp::Requeue(u.offset, u.generation),
                Settle::Drop => QueueOp::Drop(u.offset, u.generation),
            };
            match &mut run {
                Some((q, ops)) if *q == u.queue => ops.push(op),
                _ => {
                    if let Some((q, ops)) = run.take() {
                        self.push_settles(q, ops);
                    }
                    let mut ops = Vec::with_capacity(left);
                    ops.push(op);
                    run = Some((u.queue, ops));
                }
            }
            left -= 1;
        }
        if let Some((q, ops)) = run {
            self.push_settles(q, ops);
        }
        self.flush_pending();
        for q in kick {
            q.send(QueueCmd::Kick);
        }
        Ok(())
    }
}
