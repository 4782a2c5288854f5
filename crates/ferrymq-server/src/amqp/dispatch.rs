//! Channel-level dispatch: routing a method to its class, channel open/close/flow.

use amq_protocol::protocol::{basic, channel, confirm, AMQPClass};
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_amqp::method::Method;

use crate::channel::{Channel, ChannelState, Partial, Settle};

use super::*;

impl Connection {
    pub(super) async fn channel_method(&mut self, ch: u16, method: Method<'_>) -> Result<()> {
        // Frames on a channel we are closing are dropped, except the close handshake.
        if let Some(c) = self.channels.get(&ch) {
            if c.state == ChannelState::Closing {
                match method {
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                        self.forget_channel(ch);
                    }
                    Method::Other(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                        self.send_method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                    }
                    _ => {}
                }
                return Ok(());
            }
            if c.partial.is_some() {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    format!("expected content header for class 60, got non content header frame instead (channel {ch})"),
                ));
            }
        }
        match method {
            Method::Publish(p) => {
                let c = self.open_channel(ch)?;
                if p.immediate {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "immediate=true"));
                }
                c.asm.clear();
                c.asm.extend_from_slice(p.exchange);
                c.asm.extend_from_slice(p.routing_key);
                c.partial = Some(Partial {
                    mandatory: p.mandatory,
                    exchange_len: p.exchange.len(),
                    routing_key_len: p.routing_key.len(),
                    header: None,
                    received: 0,
                    big_body: None,
                });
                Ok(())
            }
            Method::Ack {
                delivery_tag,
                multiple,
            } => self.settle(ch, delivery_tag, multiple, Settle::Ack),
            Method::Nack {
                delivery_tag,
                multiple,
                requeue,
            } => self.settle(
                ch,
                delivery_tag,
                multiple,
                if requeue {
                    Settle::Requeue
                } else {
                    Settle::Drop
                },
            ),
            Method::Reject {
                delivery_tag,
                requeue,
            } => self.settle(
                ch,
                delivery_tag,
                false,
                if requeue {
                    Settle::Requeue
                } else {
                    Settle::Drop
                },
            ),
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => {
                if prefetch_size != 0 {
                    return Err(AmqpError::new(
                        code::NOT_IMPLEMENTED,
                        format!("prefetch_size!=0 ({prefetch_size})"),
                    ));
                }
                self.flush_pending();
                let qos = basic::Qos {
                    prefetch_count,
                    global,
                };
                self.other_method(ch, AMQPClass::Basic(basic::AMQPMethod::Qos(qos)))
                    .await
            }
            Method::Other(m) => {
                // Anything but the hot methods sees every earlier publish and ack applied.
                self.flush_pending();
                self.other_method(ch, m).await
            }
        }
    }

    pub(super) fn open_channel(&mut self, ch: u16) -> Result<&mut Channel> {
        self.channels.get_mut(&ch).ok_or_else(|| {
            AmqpError::new(
                code::CHANNEL_ERROR,
                format!("expected 'channel.open' for channel {ch}"),
            )
        })
    }

    pub(super) async fn other_method(&mut self, ch: u16, m: AMQPClass) -> Result<()> {
        use AMQPClass as K;
        if let K::Channel(channel::AMQPMethod::Open(_)) = m {
            if self.channels.contains_key(&ch) {
                return Err(AmqpError::new(
                    code::CHANNEL_ERROR,
                    format!("second 'channel.open' seen on channel {ch}"),
                ));
            }
            if ch > self.channel_max {
                return Err(AmqpError::new(
                    code::NOT_ALLOWED,
                    format!(
                        "channel number {ch} exceeds channel_max {}",
                        self.channel_max
                    ),
                ));
            }
            if let Some(s) = &self.session {
                if let Some(limit) = s.user().limits.max_channels {
                    if self.broker.user_channels(s.user_name()) as i64 >= limit {
                        return Err(AmqpError::new(
                            code::NOT_ALLOWED,
                            format!(
                                "number of channels opened for user '{}' has reached the maximum allowed user limit of {limit}",
                                s.user_name()
                            ),
                        ));
                    }
                }
                self.broker.add_user_channel(s.user_name());
                self.channels_counted += 1;
            }
            self.channels.insert(ch, Channel::new());
            self.send_method(
                ch,
                K::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
            );
            return Ok(());
        }
        self.open_channel(ch)?;
        let (class_id, method_id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let r = match m {
            K::Channel(m) => self.channel_class(ch, m).await,
            K::Exchange(m) => self.exchange_class(ch, m),
            K::Queue(m) => self.queue_class(ch, m).await,
            K::Basic(m) => self.basic_class(ch, m).await,
            K::Confirm(confirm::AMQPMethod::Select(s)) => {
                let c = self.open_channel(ch)?;
                if c.tx.is_some() {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                c.confirm = true;
                if !s.nowait {
                    self.send_method(
                        ch,
                        K::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            K::Tx(m) => self.tx_class(ch, m),
            K::Access(_) => Ok(()),
            other => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("method {other:?} not valid from a client"),
            )),
        };
        match r {
            Err(e) if !e.is_connection_error() => {
                self.close_channel(ch, e, class_id, method_id);
                Ok(())
            }
            r => r,
        }
    }

    pub(super) async fn channel_class(&mut self, ch: u16, m: channel::AMQPMethod) -> Result<()> {
        use channel::AMQPMethod as M;
        match m {
            M::Close(_) => {
                self.release_channel(ch);
                self.forget_channel(ch);
                self.send_method(ch, AMQPClass::Channel(M::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            M::CloseOk(_) => Ok(()),
            M::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::new(code::NOT_IMPLEMENTED, "active=false"));
                }
                self.open_channel(ch)?.flow_active = true;
                self.send_method(
                    ch,
                    AMQPClass::Channel(M::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            M::FlowOk(_) => Ok(()),
            other => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("unexpected {other:?}"),
            )),
        }
    }
}
