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
                self.client_properties = s.client_properties.clone();
                if let Some(AMQPValue::FieldTable(caps)) =
                    s.client_properties.inner().get("capabilities")
                {
                    let on =
                        |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
                    self.caps = ClientCaps {
                        consumer_cancel_notify: on("consumer_cancel_notify"),
                        connection_blocked: on("connection.blocked"),
                        authentication_failure_close: on("authentication_failure_close"),
                        spec_qos: false,
                    };
                }
                self.caps.spec_qos = reads_qos_as_the_spec(&s.client_properties);
                let mech = s.mechanism.as_str();
                let offered = self.mechanisms();
                if !offered.split(' ').any(|m| m == mech) {
                    return Err(AmqpError::new(
                        code::COMMAND_INVALID,
                        format!("unknown authentication mechanism '{mech}'"),
                    ));
                }
                match self.authenticate(mech, s.response.as_bytes()) {
                    Ok(user) => {
                        self.user = user.name.clone();
                        self.impersonator = user.has_tag("impersonator");
                        self.auth_user = Some(user);
                    }
                    Err(e) => {
                        // The reason goes to the log only; the client learns nothing more.
                        tracing::warn!(peer = %self.peer, mechanism = mech, "{mech} login refused: {e}");
                        let text = format!("Login was refused using authentication mechanism {mech}. For details see the broker logfile.");
                        if self.caps.authentication_failure_close {
                            return Err(AmqpError::new(code::ACCESS_REFUSED, text));
                        }
                        // RabbitMQ drops such clients after a pause, saying nothing.
                        self.phase = Phase::Closing;
                        self.closing_since = Some(Instant::now());
                        return Ok(());
                    }
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
                if let Some(max) = self.broker.config.connection_max {
                    // As RabbitMQ: the connections open on the listener, this one included.
                    let open = self
                        .broker
                        .amqp_connections
                        .load(std::sync::atomic::Ordering::Acquire);
                    if open > max {
                        return Err(AmqpError::new(
                            code::NOT_ALLOWED,
                            format!("connection refused: node connection limit ({max}) is reached"),
                        ));
                    }
                }
                self.open_vhost(o.virtual_host.as_str())?;
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

impl Connection {
    /// The SASL mechanisms offered in `connection.start`: EXTERNAL only on TLS connections
    /// with a verified client certificate.
    pub(super) fn mechanisms(&self) -> &'static str {
        if self.peer_cn.is_some() {
            "PLAIN AMQPLAIN EXTERNAL"
        } else {
            "PLAIN AMQPLAIN"
        }
    }

    /// Checks a `connection.start-ok` response against the user store.
    fn authenticate(
        &self,
        mech: &str,
        response: &[u8],
    ) -> std::result::Result<Arc<ferrymq_auth::User>, ferrymq_auth::AuthError> {
        let auth = &self.broker.auth;
        let loopback = self.peer.ip().is_loopback();
        if mech == "EXTERNAL" {
            // The user named by the client certificate must exist; no password check.
            let name = self.peer_cn.clone().unwrap_or_default();
            let user = auth
                .user(&name)
                .ok_or(ferrymq_auth::AuthError::InvalidCredentials { username: name })?;
            auth.check_loopback(&user.name, loopback)?;
            return Ok(user);
        }
        let Some((user, pass)) = check_credentials(mech, response) else {
            return Err(ferrymq_auth::AuthError::MalformedPlain(
                "not a PLAIN or AMQPLAIN response",
            ));
        };
        auth.authenticate_plain(&user, &pass, loopback)
    }

    /// `connection.open`: the vhost's connection limit, the user's connection limit, then
    /// access (the vhost exists and the user has permissions in it), RabbitMQ's order.
    fn open_vhost(&mut self, name: &str) -> Result<()> {
        let Some(user) = self.auth_user.clone() else {
            return Err(AmqpError::new(code::COMMAND_INVALID, "not authenticated"));
        };
        let refused = || {
            AmqpError::new(
                code::NOT_ALLOWED,
                format!("access to vhost '{name}' refused for user '{}'", user.name),
            )
        };
        let auth = self.broker.auth.clone();
        let (Some(info), Some(vhost)) = (auth.vhost(name), self.broker.vhost(name)) else {
            return Err(refused());
        };
        if let Some(limit) = info.limits.max_connections {
            if vhost.connections.load(std::sync::atomic::Ordering::Acquire) as i64 >= limit {
                return Err(AmqpError::new(
                    code::NOT_ALLOWED,
                    format!(
                        "access to vhost '{name}' refused for user '{}': connection limit ({limit}) is reached",
                        user.name
                    ),
                ));
            }
        }
        if let Some(limit) = user.limits.max_connections {
            if self.broker.user_connections(&user.name) as i64 >= limit {
                return Err(AmqpError::new(
                    code::NOT_ALLOWED,
                    format!(
                        "connection refused for user '{}': user connection limit ({limit}) is reached",
                        user.name
                    ),
                ));
            }
        }
        if auth.access(&user.name, name).is_none() {
            return Err(refused());
        }
        vhost
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.broker.add_user_connection(&user.name);
        self.registration = Some(self.broker.registry.register(
            self.id,
            crate::stats::ConnectionMeta {
                protocol: crate::stats::Protocol::Amqp091,
                user: user.name.clone(),
                vhost: name.to_owned(),
                peer: self.peer,
                local: self.local,
                tls: self.tls,
                client_properties: std::mem::take(&mut self.client_properties),
                frame_max: self.frame_max,
                channel_max: self.channel_max,
                timeout: self.heartbeat,
                connected_at: self.connected_at,
            },
        ));
        self.session = Some(crate::session::Session::new(auth, vhost, user));
        Ok(())
    }
}

/// The (user, password) of a PLAIN (`authzid\0user\0pass`) or AMQPLAIN (table with
/// LOGIN and PASSWORD) response.
fn check_credentials(mechanism: &str, response: &[u8]) -> Option<(String, Vec<u8>)> {
    match mechanism {
        "PLAIN" => {
            // RabbitMQ ignores the authorization id.
            let mut parts = response.splitn(3, |b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((short(user), pass.to_vec()))
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
            Some((get("LOGIN")?, get("PASSWORD")?.into_bytes()))
        }
        _ => None,
    }
}

/// Clients that read `basic.qos global=false` as the spec does (see `ClientCaps::spec_qos`):
/// py-amqp names itself in `product` unless the application overrides it.
fn reads_qos_as_the_spec(props: &FieldTable) -> bool {
    match props.inner().get("product") {
        Some(AMQPValue::LongString(p)) => p.as_bytes() == b"py-amqp",
        Some(AMQPValue::ShortString(p)) => p.as_str() == "py-amqp",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn props(product: Option<&str>) -> FieldTable {
        let mut t = FieldTable::default();
        if let Some(p) = product {
            t.insert("product".into(), AMQPValue::LongString(LongString::from(p)));
        }
        t
    }

    #[test]
    fn only_py_amqp_reads_qos_as_the_spec() {
        assert!(reads_qos_as_the_spec(&props(Some("py-amqp"))));
        assert!(!reads_qos_as_the_spec(&props(Some(
            "Pika Python Client Library"
        ))));
        assert!(!reads_qos_as_the_spec(&props(Some("lapin"))));
        assert!(!reads_qos_as_the_spec(&props(None)));
    }
}
