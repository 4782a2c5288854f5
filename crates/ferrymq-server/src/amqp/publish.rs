//! Publishing: content assembly, authorisation, routing, batching to queues, confirms.

use std::sync::Arc;

use bytes::BytesMut;
use ferrymq_amqp::content::decode_content_header;
use ferrymq_amqp::encode;
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_amqp::frame::FRAME_HEADER;
use ferrymq_core::{half, Message};

use crate::channel::{ChannelState, HeaderInfo};
use crate::queue_task::{Confirm, ConfirmTo, ConfirmToken, Outbound, QueueHandle, QueueOp};

use super::*;

/// The most a queue's new publish batch reserves up front (see `pending_room`).
const MAX_PENDING_ROOM: usize = 1024;

impl Connection {
    pub(super) fn content_frame(&mut self, kind: u8, ch: u16, payload: &[u8]) -> Result<()> {
        let max_size = self.broker.config.max_message_size;
        if kind == FRAME_HEADER {
            if let Some(e) = self.over_assembly_cap(payload) {
                self.close_channel(ch, e, 60, 40);
                return Ok(());
            }
        }
        let Some(c) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                format!("expected 'channel.open' for channel {ch}"),
            ));
        };
        if c.state == ChannelState::Closing {
            return Ok(());
        }
        let Some(partial) = c.partial.as_mut() else {
            return Err(AmqpError::new(
                code::UNEXPECTED_FRAME,
                format!("expected method frame, got non method frame instead (channel {ch})"),
            ));
        };
        if kind == FRAME_HEADER {
            if partial.header.is_some() {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "expected content body, got content header",
                ));
            }
            let h = decode_content_header(payload)?;
            if h.class_id != 60 {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    format!("content header for class {}", h.class_id),
                ));
            }
            if h.body_size > max_size {
                let e = AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "message size {} is larger than configured max size {max_size}",
                        h.body_size
                    ),
                );
                self.close_channel(ch, e, 60, 40);
                return Ok(());
            }
            if let Some(exp) = h.expiration {
                let valid =
                    !exp.is_empty() && exp.len() <= 19 && exp.iter().all(u8::is_ascii_digit);
                if !valid {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!("invalid expiration '{}': {{error,no_integer}}", short(exp)),
                    )
                    .in_method(60, 40));
                }
            }
            if let Some(uid) = h.user_id {
                if uid != self.user.as_bytes() && !self.impersonator {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!(
                            "user_id property set to '{}' but authenticated user was '{}'",
                            short(uid),
                            self.user
                        ),
                    ));
                }
            }
            let mut rewritten = None;
            if h.reply_to == Some(DIRECT_REPLY_TO.as_bytes()) {
                let Some(name) = &c.reply_name else {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "fast reply consumer does not exist",
                    ));
                };
                rewritten =
                    Some(rewrite_reply_to(h.raw_properties, name).ok_or_else(|| {
                        AmqpError::new(code::SYNTAX_ERROR, "malformed properties")
                    })?);
            }
            let props = rewritten.as_deref().unwrap_or(h.raw_properties);
            c.asm.extend_from_slice(props);
            let small = c.asm.len() as u64 + h.body_size <= COPY_LIMIT as u64;
            if small {
                c.asm.reserve(h.body_size as usize);
            } else {
                partial.big_body = Some(BytesMut::with_capacity(h.body_size as usize));
            }
            let done = h.body_size == 0;
            partial.header = Some(HeaderInfo {
                properties_len: props.len(),
                body_size: h.body_size,
                persistent: h.persistent,
                priority: h.priority,
                headers: h.headers,
                ttl_ms: h
                    .expiration
                    .and_then(|e| std::str::from_utf8(e).ok()?.parse().ok()),
            });
            if !done {
                return Ok(());
            }
        } else {
            let Some(h) = &partial.header else {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "expected content header, got content body",
                ));
            };
            let total = partial.received + payload.len() as u64;
            if total > h.body_size {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    format!(
                        "content body of {total} bytes exceeds declared size {}",
                        h.body_size
                    ),
                ));
            }
            partial.received = total;
            match &mut partial.big_body {
                Some(b) => b.extend_from_slice(payload),
                None => c.asm.extend_from_slice(payload),
            }
            if total < h.body_size {
                return Ok(());
            }
        }
        let partial = c.partial.take().expect("checked above");
        let mandatory = partial.mandatory;
        let msg = build_message(partial, &c.asm);
        let msg = Arc::new(msg);
        let in_tx = c.tx.is_some();
        self.authorize_publish(&msg)
            .map_err(|e| e.in_method(60, 40))?;
        if in_tx {
            if let Some(tx) = self.channels.get_mut(&ch).and_then(|c| c.tx.as_mut()) {
                tx.publishes.push((mandatory, msg));
            }
            return Ok(());
        }
        self.route_and_enqueue(ch, mandatory, msg)
    }

    /// The per-connection cap on bytes in assembly (`max_assembly_bytes`): a content header
    /// declaring a body above the copy limit is refused when the bodies this connection's
    /// channels are still assembling plus this one would exceed it. Small bodies are not
    /// checked (channel_max × the copy limit bounds them), so the common path costs a
    /// comparison; a large one costs a walk over the connection's channels.
    fn over_assembly_cap(&self, payload: &[u8]) -> Option<AmqpError> {
        let size = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
        if size <= COPY_LIMIT as u64 {
            return None;
        }
        let cap = self
            .broker
            .config
            .max_assembly_bytes
            .max(self.broker.config.max_message_size);
        let assembling: u64 = self
            .channels
            .values()
            .filter_map(|c| c.partial.as_ref()?.header.as_ref())
            .map(|h| h.body_size)
            .sum();
        (assembling.saturating_add(size) > cap).then(|| {
            AmqpError::new(
                code::PRECONDITION_FAILED,
                format!(
                    "message size {size} with {assembling} bytes of messages in assembly on \
                     this connection is over the limit of {cap} (max_assembly_bytes)"
                ),
            )
        })
    }

    /// Authorises a complete publish through the session. A decision that holds for any
    /// routing key is remembered for the exchange until the user store or the topology
    /// changes, so a stream of publishes to one exchange costs two comparisons.
    fn authorize_publish(&mut self, msg: &Message) -> Result<()> {
        let epoch = self.vh()?.epoch();
        let Some(s) = self.session.as_mut() else {
            return Err(AmqpError::new(code::CHANNEL_ERROR, "no vhost opened"));
        };
        if let Some((x, e)) = &self.publish_allowed {
            if *x == msg.exchange && *e == epoch && s.is_current() {
                return Ok(());
            }
        }
        let exchange = std::str::from_utf8(&msg.exchange)
            .map_err(|_| AmqpError::new(code::SYNTAX_ERROR, "exchange name is not UTF-8"))?;
        let any_key = s.authorize_publish(exchange, &msg.routing_key, msg.headers.as_ref())?;
        self.publish_allowed = any_key.then(|| (msg.exchange.clone(), epoch));
        Ok(())
    }

    /// Routes a complete message and queues it for delivery to its queues at the next
    /// flush. Sends `basic.return` for unroutable mandatory messages and counts the publish
    /// for confirms.
    pub(super) fn route_and_enqueue(
        &mut self,
        ch: u16,
        mandatory: bool,
        msg: Arc<Message>,
    ) -> Result<()> {
        self.has_published = true;
        // Half messages: a decision, or a publish with `x-transaction-id` (one header
        // lookup, only for publishes that carry headers).
        if msg.exchange.as_ref() == half::EXCHANGE.as_bytes() {
            return self.decide_half(ch, mandatory, msg);
        }
        if msg.headers.is_some() {
            let meta = half::half_meta(msg.headers.as_ref()).map_err(|e| {
                AmqpError::new(code::PRECONDITION_FAILED, e.to_string()).in_method(60, 40)
            })?;
            if let Some(meta) = meta {
                return self.hold_half(ch, mandatory, msg, meta);
            }
        }
        let mut msg = msg;
        let (targets, direct) =
            if msg.exchange.is_empty() && msg.routing_key.starts_with(DIRECT_REPLY_TO.as_bytes()) {
                // Direct reply-to: straight to the requesting channel's pseudo consumer.
                let name = String::from_utf8_lossy(&msg.routing_key);
                let sent = self.vh()?.reply_consumer(&name).is_some_and(|r| {
                    r.outbound
                        .send(Outbound::Reply {
                            consumer: r.consumer,
                            msg: msg.clone(),
                        })
                        .is_ok()
                });
                (Arc::from(Vec::new()), sent)
            } else if msg.headers.is_some() {
                // CC/BCC, delayed and de-duplication exchanges all work from headers.
                match crate::routing::classify(self.vh()?, msg.clone())? {
                    crate::routing::Publish::Hold(handle, due) => {
                        return self.hold_delayed(ch, msg, handle, due);
                    }
                    crate::routing::Publish::Route(m, targets) => {
                        msg = m;
                        (Arc::from(targets), false)
                    }
                }
            } else {
                (self.route(&msg)?, false)
            };
        if targets.is_empty() && !direct && mandatory {
            encode::basic_return(
                &mut self.wbuf,
                ch,
                code::NO_ROUTE,
                "NO_ROUTE",
                &msg,
                self.frame_max,
            );
        }
        self.exchange_counts
            .count(&msg.exchange, targets.len() + usize::from(direct));
        let c = self.open_channel(ch)?;
        c.counts.publish += 1;
        c.counts.publish_bytes += msg.size() as u64;
        if targets.is_empty() && !direct {
            if mandatory {
                c.counts.return_unroutable += 1;
            } else {
                c.counts.drop_unroutable += 1;
            }
        }
        let seq = if c.confirm {
            c.publish_seq += 1;
            Some(c.publish_seq)
        } else {
            None
        };
        // A persistent message to a durable queue is confirmed only once that queue has
        // stored it (fsync under the default policy); anything else once it is enqueued.
        let mut waiting = 0;
        for q in targets.iter() {
            let confirm = match seq {
                Some(seq) if (msg.persistent && q.is_durable()) || q.may_reject_publish() => {
                    waiting += 1;
                    Some(Confirm { channel: ch, seq })
                }
                _ => None,
            };
            self.push_op(q, QueueOp::Publish(msg.clone(), confirm));
        }
        if let (Some(seq), true) = (seq, waiting > 0) {
            self.open_channel(ch)?.unconfirmed.insert(seq, waiting);
        }
        Ok(())
    }

    /// Hands a half message to the vhost's half-message task: stored and confirmed (once
    /// fsynced), not routed. Its exchange must exist, as for any publish.
    fn hold_half(
        &mut self,
        ch: u16,
        mandatory: bool,
        msg: Arc<Message>,
        meta: half::HalfMeta,
    ) -> Result<()> {
        let vh = self.vh()?;
        let exchange = std::str::from_utf8(&msg.exchange)
            .map_err(|_| AmqpError::new(code::SYNTAX_ERROR, "exchange name is not UTF-8"))?;
        if vh.read(|t| t.exchange(exchange).is_none()) {
            let e = ferrymq_core::CoreError::not_found("exchange", exchange, &vh.name);
            return Err(AmqpError::from(e).in_method(60, 40));
        }
        let Some(handle) = vh.half_handle() else {
            return Err(AmqpError::new(
                code::INTERNAL_ERROR,
                "half messages unavailable",
            ));
        };
        self.exchange_counts.count(&msg.exchange, 0);
        let token = self.half_token(ch, &msg)?;
        handle.send(crate::halfmsg::HalfCmd::Half {
            msg,
            meta,
            mandatory,
            token,
        });
        Ok(())
    }

    /// A decision published to `amq.ferrymq.transactions` (routing key = transaction id,
    /// `x-transaction-action` = `commit` / `rollback`; anything else is a 406 channel
    /// error). Ordered after this connection's earlier halves by the task's inbox.
    fn decide_half(&mut self, ch: u16, mandatory: bool, msg: Arc<Message>) -> Result<()> {
        let action = half::decision_action(msg.headers.as_ref()).map_err(|e| {
            AmqpError::new(code::PRECONDITION_FAILED, e.to_string()).in_method(60, 40)
        })?;
        let Some(handle) = self.vh()?.half_handle() else {
            return Err(AmqpError::new(
                code::INTERNAL_ERROR,
                "half messages unavailable",
            ));
        };
        self.exchange_counts.count(&msg.exchange, 0);
        let token = self.half_token(ch, &msg)?;
        handle.send(crate::halfmsg::HalfCmd::Decide {
            msg,
            action,
            mandatory,
            ret: crate::halfmsg::ReturnTo {
                outbound: self.outbound_tx.clone(),
                channel: ch,
            },
            token,
        });
        Ok(())
    }

    /// Counts a publish handed to the half-message task and, in confirm mode, its token.
    fn half_token(&mut self, ch: u16, msg: &Message) -> Result<Option<ConfirmToken>> {
        let outbound = self.outbound_tx.clone();
        let c = self.open_channel(ch)?;
        c.counts.publish += 1;
        c.counts.publish_bytes += msg.size() as u64;
        if !c.confirm {
            return Ok(None);
        }
        c.publish_seq += 1;
        let seq = c.publish_seq;
        c.unconfirmed.insert(seq, 1);
        Ok(Some(ConfirmToken {
            outbound,
            channel: ch,
            seq,
        }))
    }

    /// Hands a publish with a positive `x-delay` to its delayed exchange. It is never
    /// returned (routing happens at due time); a persistent message to a durable delayed
    /// exchange is confirmed once the delay log has stored it.
    pub(super) fn hold_delayed(
        &mut self,
        ch: u16,
        msg: Arc<Message>,
        handle: crate::delayed::DelayedHandle,
        due: u64,
    ) -> Result<()> {
        let outbound = self.outbound_tx.clone();
        // Counted in now; routed out when due (by the delay task, not counted here).
        self.exchange_counts.count(&msg.exchange, 0);
        let c = self.open_channel(ch)?;
        c.counts.publish += 1;
        c.counts.publish_bytes += msg.size() as u64;
        let token = if c.confirm {
            c.publish_seq += 1;
            let seq = c.publish_seq;
            (msg.persistent && handle.durable).then(|| {
                c.unconfirmed.insert(seq, 1);
                ConfirmToken {
                    outbound,
                    channel: ch,
                    seq,
                }
            })
        } else {
            None
        };
        handle.hold(msg, due, token);
        Ok(())
    }

    /// Resolves a message's destinations. Routes of messages without headers depend only on
    /// (exchange, routing key) and the topology, so the last one is cached per connection
    /// until the topology changes.
    pub(super) fn route(&mut self, msg: &Message) -> Result<Arc<[QueueHandle]>> {
        let epoch = self.vh()?.epoch();
        if msg.headers.is_none() {
            if let Some(c) = &self.route_cache {
                if c.epoch == epoch
                    && c.exchange == msg.exchange
                    && c.routing_key == msg.routing_key
                {
                    return Ok(c.targets.clone());
                }
            }
        }
        let exchange = std::str::from_utf8(&msg.exchange)
            .map_err(|_| AmqpError::new(code::SYNTAX_ERROR, "exchange name is not UTF-8"))?;
        let rk = String::from_utf8_lossy(&msg.routing_key);
        let mut targets: Vec<QueueHandle> = Vec::with_capacity(1);
        self.vh()?
            .read(|t| t.route(exchange, &rk, msg.headers.as_ref(), &mut targets))?;
        let targets: Arc<[QueueHandle]> = Arc::from(targets);
        if msg.headers.is_none() {
            self.route_cache = Some(RouteCache {
                epoch,
                exchange: msg.exchange.clone(),
                routing_key: msg.routing_key.clone(),
                targets: targets.clone(),
            });
        }
        Ok(targets)
    }

    pub(super) fn push_op(&mut self, q: &QueueHandle, op: QueueOp) {
        let (pending, hint, room) = match op {
            QueueOp::Publish(..) => (&mut self.pending, &mut self.pending_hint, self.pending_room),
            _ => (&mut self.pending_settles, &mut 0, 0),
        };
        // After the last queue of a message comes the first one of the next.
        let guess = if *hint >= pending.len() { 0 } else { *hint };
        let at = match pending.get(guess) {
            Some((h, _)) if h == q => Some(guess),
            _ => pending.iter().rposition(|(h, _)| h == q),
        };
        match at {
            Some(i) => {
                pending[i].1.push(op);
                *hint = i + 1;
            }
            None => {
                let mut ops = Vec::with_capacity(room.max(1));
                ops.push(op);
                pending.push((q.clone(), ops));
                *hint = pending.len();
            }
        }
    }

    /// Adds settles for one queue to the batch (see `push_op`).
    pub(super) fn push_settles(&mut self, q: QueueHandle, mut ops: Vec<QueueOp>) {
        match self.pending_settles.iter_mut().rev().find(|(h, _)| *h == q) {
            Some((_, pending)) => pending.append(&mut ops),
            None => self.pending_settles.push((q, ops)),
        }
    }

    /// Sends the batch's queue operations and the batch's publisher confirms.
    pub(super) fn flush_pending(&mut self) {
        if let Some(most) = self.pending.iter().map(|(_, ops)| ops.len()).max() {
            self.pending_room = most.min(MAX_PENDING_ROOM);
        }
        for (q, mut ops) in self.pending.drain(..) {
            // A batch that got far less than the room it started with gives the rest
            // back: a lagging queue may hold thousands of batches.
            if ops.capacity() > 2 * ops.len() + 16 {
                ops.shrink_to_fit();
            }
            // The batch's publishes are confirmed to this connection (one sender per
            // queue and batch, none per message).
            let to = ConfirmTo {
                outbound: self.outbound_tx.clone(),
            };
            q.send_batch(ops, Some(to));
            if self.throttle.is_none() && q.is_congested() {
                self.throttle = Some(q);
            }
        }
        for (q, ops) in self.pending_settles.drain(..) {
            q.send_settles(ops);
        }
        for (ch, c) in self.channels.iter_mut() {
            c.emit_confirms(*ch, &mut self.wbuf);
            c.sync_stats(&self.broker.global);
        }
        if !self.exchange_counts.is_empty() {
            if let Some(s) = &self.session {
                self.exchange_counts.flush(&s.vhost);
            }
        }
    }
}
