//! The `tx` class: transactions buffer publishes and settles until commit.

use amq_protocol::protocol::{tx, AMQPClass};
use ferrymq_amqp::error::{code, AmqpError};

use crate::channel::{ChannelState, TxBuffer};

use super::*;

impl Connection {
    pub(super) fn tx_class(&mut self, ch: u16, m: tx::AMQPMethod) -> Result<()> {
        use tx::AMQPMethod as M;
        match m {
            M::Select(_) => {
                let c = self.open_channel(ch)?;
                if c.confirm {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if c.tx.is_none() {
                    c.tx = Some(TxBuffer::default());
                }
                self.send_method(ch, AMQPClass::Tx(M::SelectOk(tx::SelectOk {})));
            }
            M::Commit(_) => {
                let c = self.open_channel(ch)?;
                let Some(buf) = c.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                };
                for (p, msg) in buf.publishes {
                    self.route_and_enqueue(ch, p, msg)?;
                }
                for (tag, multiple, how) in buf.settles {
                    self.apply_settle(ch, tag, multiple, how)?;
                    if self
                        .channels
                        .get(&ch)
                        .is_none_or(|c| c.state != ChannelState::Open)
                    {
                        return Ok(());
                    }
                }
                self.flush_pending();
                self.send_method(ch, AMQPClass::Tx(M::CommitOk(tx::CommitOk {})));
            }
            M::Rollback(_) => {
                let c = self.open_channel(ch)?;
                if c.tx.is_none() {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                c.tx = Some(TxBuffer::default());
                self.send_method(ch, AMQPClass::Tx(M::RollbackOk(tx::RollbackOk {})));
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
