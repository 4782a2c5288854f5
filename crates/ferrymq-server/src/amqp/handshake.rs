//! The `connection` class: the handshake (authentication, tuning, vhost), close, update-secret.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use ferrymq_amqp::error::{code, AmqpError};
use ferrymq_amqp::method::Method;

use super::*;

impl Connection {
    pub(super) fn connection_method(&mut self, method: Method) -> Result<()> {
        let Method::Other(AMQPClass::Connection(m)) = method else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                "non-connection method on channel 0",
            ));
        };
        use connection::AMQPMethod as C;
        match (self.phase, m) {
            (Phase::StartOk, C::StartOk(s)) => {
                if let Some(AMQPValue::FieldTable(caps)) =
                    s.client_properties.inner().get("capabilities")
                {
                    let on =
                        |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
                    self.caps = ClientCaps {
                        consumer_cancel_notify: on("consumer_cancel_notify"),
                        connection_blocked: on("connection.blocked"),
                    };
                }
                let mech = s.mechanism.as_str();
                if mech != "PLAIN" && mech != "AMQPLAIN" {
                    return Err(AmqpError::new(
                        code::COMMAND_INVALID,
                        format!("unknown authentication mechanism '{mech}'"),
                    ));
                }
                let ok = match check_credentials(mech, s.response.as_bytes()) {
                    Some((u, p)) => {
                        let ok = u == "guest" && p == "guest" && self.peer.ip().is_loopback();
                        self.user = u;
                        ok
                    }
                    None => false,
                };
                if !ok {
                    return Err(AmqpError::new(
                        code::ACCESS_REFUSED,
                        format!("Login was refused using authentication mechanism {mech}. For details see the broker logfile."),
                    ));
                }
                let cfg = &self.broker.config;
                self.send_method(
                    0,
                    AMQPClass::Connection(C::Tune(connection::Tune {
                        channel_max: cfg.channel_max,
                        frame_max: cfg.frame_max,
                        heartbeat: cfg.heartbeat,
                    })),
                );
                self.phase = Phase::TuneOk;
                Ok(())
            }
            (Phase::TuneOk, C::TuneOk(t)) => {
                let cfg = &self.broker.config;
                if t.frame_max != 0 && t.frame_max < 4096 {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("frame_max={} < 4096 min size", t.frame_max),
                    ));
                }
                if t.frame_max > cfg.frame_max || (t.frame_max == 0 && cfg.frame_max != 0) {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("frame_max={} > {} max size", t.frame_max, cfg.frame_max),
                    ));
                }
                self.frame_max = t.frame_max;
                self.channel_max = if t.channel_max == 0 {
                    cfg.channel_max
                } else {
                    t.channel_max.min(cfg.channel_max)
                };
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, C::Open(o)) => {
                let Some(vhost) = self.broker.vhost(o.virtual_host.as_str()) else {
                    return Err(AmqpError::new(
                        code::NOT_ALLOWED,
                        format!("vhost {} not found", o.virtual_host),
                    ));
                };
                self.vhost = Some(vhost);
                self.send_method(0, AMQPClass::Connection(C::OpenOk(connection::OpenOk {})));
                self.phase = Phase::Running;
                Ok(())
            }
            (Phase::Running, C::Close(_)) => {
                self.send_method(0, AMQPClass::Connection(C::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Closing;
                self.closing_since = None;
                Ok(())
            }
            (Phase::Running, C::CloseOk(_)) => Ok(()),
            (Phase::Running, C::UpdateSecret(_)) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(C::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            (Phase::Running, C::Blocked(_) | C::Unblocked(_)) => Ok(()),
            (phase, m) => Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("unexpected method {m:?} in connection phase {phase:?}"),
            )),
        }
    }
}

fn check_credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((short(user), short(pass)))
        }
        "AMQPLAIN" => {
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, t) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(s)) => Some(short(s.as_bytes())),
                Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}
