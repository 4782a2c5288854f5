//! The `exchange` class: declare, delete, exchange-to-exchange bindings.

use amq_protocol::protocol::{exchange, AMQPClass};
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_core::topology::{Dest, ExchangeKind, ExchangeSpec};

use super::*;

impl Connection {
    pub(super) fn exchange_class(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<()> {
        use exchange::AMQPMethod as M;
        let conn = self.id;
        match m {
            M::Declare(d) => {
                let kind = match ExchangeKind::parse(d.kind.as_str()) {
                    Some(k) => k,
                    None if d.passive => ExchangeKind::Direct,
                    None => {
                        return Err(AmqpError::new(
                            code::COMMAND_INVALID,
                            format!("invalid exchange type '{}'", d.kind),
                        ))
                    }
                };
                let spec = ExchangeSpec {
                    name: d.exchange.as_str().into(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                };
                self.session()?.declare_exchange(spec, d.passive)?;
                if !d.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(M::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            M::Delete(d) => {
                self.session()?
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::DeleteOk(exchange::DeleteOk {})));
                }
            }
            M::Bind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    Dest::Exchange(b.destination.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.session()?.bind(binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::BindOk(exchange::BindOk {})));
                }
            }
            M::Unbind(b) => {
                let binding = binding(
                    b.source.as_str(),
                    Dest::Exchange(b.destination.as_str().into()),
                    b.routing_key.as_str(),
                    b.arguments,
                );
                self.session()?.unbind(&binding, conn)?;
                if !b.nowait {
                    self.send_method(ch, AMQPClass::Exchange(M::UnbindOk(exchange::UnbindOk {})));
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
