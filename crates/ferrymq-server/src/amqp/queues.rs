//! The `queue` class: declare, bind, unbind, purge, delete.

use amq_protocol::protocol::{queue, AMQPClass};
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_core::topology::{Declared, Dest, QueueSpec};
use ferrymq_core::CoreError;

use crate::queue_task::QueueCmd;

use super::*;

impl Connection {
    pub(super) async fn queue_class(&mut self, ch: u16, m: queue::AMQPMethod) -> Result<()> {
        use queue::AMQPMethod as M;
        let conn = self.id;
        let vhost = self.vh()?.name.clone();
        match m {
            M::Declare(d) => {
                let name = if d.queue.as_str().is_empty() {
                    if d.passive {
                        return Err(CoreError::not_found("queue", "", &vhost).into());
                    }
                    random_name("amq.gen-")
                } else {
                    if !d.passive {
                        ferrymq_core::topology::check_queue_name(d.queue.as_str())?;
                    }
                    d.queue.as_str().to_owned()
                };
                if !d.passive {
                    ferrymq_core::topology::validate_queue_args(&vhost, &name, &d.arguments)?;
                }
                let spec = QueueSpec {
                    name: name.as_str().into(),
                    durable: d.durable,
                    exclusive_owner: d.exclusive.then_some(conn),
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                if !d.passive {
                    ferrymq_core::args::validate_queue_type(&vhost, &spec)?;
                }
                let declared = self.session()?.declare_queue(spec, d.passive, conn)?;
                let handle = match declared {
                    Declared::Created(q) => {
                        if q.spec.exclusive_owner.is_some() {
                            self.exclusive_queues.push(q.handle.clone());
                        }
                        q.handle
                    }
                    Declared::Existing(q) => {
                        q.handle.send(QueueCmd::Touch);
                        q.handle
                    }
                };
                if !d.nowait {
                    let (messages, consumers) = handle
                        .ask(|reply| QueueCmd::Stats { reply })
                        .await
                        .ok_or_else(|| CoreError::not_found("queue", &name, &vhost))?;
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::DeclareOk(queue::DeclareOk {
                            queue: sstr(&name),
                            message_count: messages as u32,
                            consumer_count: consumers as u32,
                        })),
                    );
                }
            }
            M::Bind(b) => {
                let binding = binding(
                    b.exchange.as_str(),
                    Dest::Queue(b.queue.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.session()?.bind(binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let binding = binding(
                    b.exchange.as_str(),
                    Dest::Queue(b.queue.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                match self.session()?.unbind(&binding, conn) {
                    Ok(()) | Err(CoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                self.send_method(ch, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
            }
            M::Purge(p) => {
                let q = self.session()?.queue_to_read(p.queue.as_str(), conn)?;
                let n = q
                    .ask(|reply| QueueCmd::Purge { reply })
                    .await
                    .ok_or_else(|| CoreError::not_found("queue", p.queue.as_str(), &vhost))?;
                if !p.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk {
                            message_count: n as u32,
                        })),
                    );
                }
            }
            M::Delete(d) => {
                let q = self.session()?.queue_to_delete(d.queue.as_str(), conn)?;
                let mut count = 0;
                if let Some(q) = q {
                    let r = q
                        .ask(|reply| QueueCmd::Delete {
                            if_unused: d.if_unused,
                            if_empty: d.if_empty,
                            reply,
                        })
                        .await;
                    match r {
                        Some(Ok(n)) => count = n,
                        Some(Err(e)) => return Err(e.into()),
                        None => {}
                    }
                    self.exclusive_queues.retain(|x| *x != q);
                }
                if !d.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk {
                            message_count: count as u32,
                        })),
                    );
                }
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
}
