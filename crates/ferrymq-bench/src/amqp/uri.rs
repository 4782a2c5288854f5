//! Parsing `amqp://user:password@host:port/vhost` and `amqps://...` URIs (RabbitMQ's URI
//! spec, without query parameters) into the address, credentials and transport a
//! connection needs. TLS settings (CA file, no verification) are command-line options.

use anyhow::{bail, Context};

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// SASL PLAIN user name.
    pub user: String,
    /// SASL PLAIN password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
    /// `amqps://`: TLS over TCP (default port 5671).
    pub tls: bool,
}

impl AmqpUri {
    /// Parses a URI; a missing user, port or vhost defaults to guest/guest, 5672 (5671 for
    /// `amqps://`) and `/`.
    pub fn parse(uri: &str) -> anyhow::Result<AmqpUri> {
        let (rest, tls) = if let Some(rest) = uri.strip_prefix("amqp://") {
            (rest, false)
        } else if let Some(rest) = uri.strip_prefix("amqps://") {
            (rest, true)
        } else {
            bail!("not an amqp:// or amqps:// URI: {uri}");
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
                None => (percent_decode(info)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').context("unterminated [IPv6] host")?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p
                .parse()
                .with_context(|| format!("bad port {p:?} in {uri}"))?,
            _ if tls => 5671,
            _ => 5672,
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            percent_decode(&host)?
        };
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) => percent_decode(p)?,
        };
        Ok(AmqpUri {
            host,
            port,
            user,
            password,
            vhost,
            tls,
        })
    }

    /// `host:port` for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .with_context(|| format!("bad percent escape in {s:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .with_context(|| format!("bad percent escape in {s:?}"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("percent-decoded {s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, expected: (&str, u16, &str, &str, &str)) {
        let u = AmqpUri::parse(uri).unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.user.as_str(),
                u.password.as_str(),
                u.vhost.as_str()
            ),
            expected,
            "{uri}"
        );
    }

    #[test]
    fn uris() {
        check(
            "amqp://guest:guest@127.0.0.1:5673/%2f",
            ("127.0.0.1", 5673, "guest", "guest", "/"),
        );
        check(
            "amqp://localhost",
            ("localhost", 5672, "guest", "guest", "/"),
        );
        check("amqp://u:p%40ss@h/vh", ("h", 5672, "u", "p@ss", "vh"));
        check("amqp://[::1]:1234/", ("::1", 1234, "guest", "guest", "/"));
        check("amqp://a:b@h:1/v?heartbeat=0", ("h", 1, "a", "b", "v"));
        check(
            "amqps://u:p@broker.example:5671/v",
            ("broker.example", 5671, "u", "p", "v"),
        );
        assert!(AmqpUri::parse("amqps://h").unwrap().tls);
        assert_eq!(AmqpUri::parse("amqps://h").unwrap().port, 5671);
        assert_eq!(AmqpUri::parse("amqps://h:5").unwrap().port, 5);
        assert!(!AmqpUri::parse("amqp://h").unwrap().tls);
        assert!(AmqpUri::parse("amqpx://h").is_err());
        assert!(AmqpUri::parse("http://h").is_err());
        assert!(AmqpUri::parse("amqp://h:notaport").is_err());
        assert!(AmqpUri::parse("amqp://h/%zz").is_err());
        assert!(AmqpUri::parse("amqp://h/%").is_err());
    }
}
