//! SASL PLAIN (RFC 4616) and the `vhost:user` convention.
//!
//! PLAIN is `authzid \0 username \0 password`. AMQP clients send an empty authzid
//! (RabbitMQ's `rabbit_auth_mechanism_plain` only accepts that form); Kafka's
//! `PlainSaslServer` also accepts an authzid equal to the user name. FerryMQ accepts both
//! and refuses any other authzid, like Kafka. The password is kept as bytes: RabbitMQ
//! hashes whatever bytes arrive. A blank password parses; the store refuses it at login
//! (RabbitMQ's internal backend prohibits blank passwords).

use crate::error::{AuthError, SaslError};

/// The three fields of a PLAIN response.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// `None` when empty; otherwise equal to `username`.
    pub authzid: Option<String>,
    pub username: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Parses a PLAIN response `authzid \0 username \0 password`.
///
/// Errors: not exactly two NULs, a user name that is empty or not UTF-8, or an authzid
/// that is not empty and differs from the user name.
pub fn parse_plain(bytes: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut parts = bytes.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(username), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedPlain(
            "expected authzid\\0username\\0password",
        ));
    };
    if password.contains(&0) {
        return Err(AuthError::MalformedPlain(
            "expected exactly two NUL separators",
        ));
    }
    let username = std::str::from_utf8(username)
        .map_err(|_| AuthError::MalformedPlain("username is not UTF-8"))?;
    if username.is_empty() {
        return Err(AuthError::MalformedPlain("username not specified"));
    }
    let authzid = if authzid.is_empty() {
        None
    } else if authzid == username.as_bytes() {
        Some(username.to_owned())
    } else {
        return Err(AuthError::AuthzidMismatch);
    };
    Ok(PlainCredentials {
        authzid,
        username: username.to_owned(),
        password: password.to_vec(),
    })
}

/// Splits `vhost:user` at the **last** colon, as RabbitMQ's MQTT plugin does
/// (`rabbit_mqtt_processor`: vhost names may contain colons, user names then may not).
/// Without a colon the whole string is the user name and the vhost is `None` (the
/// listener's default applies). The parts are returned as they are: `":u"` gives
/// `(Some(""), "u")`.
pub fn split_vhost_user(s: &str) -> (Option<&str>, &str) {
    match s.rsplit_once(':') {
        Some((vhost, user)) => (Some(vhost), user),
        None => (None, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let c = parse_plain(b"\0guest\0guest").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.username, "guest");
        assert_eq!(c.password, b"guest");
        let c = parse_plain(b"bob\0bob\0p\xffw").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("bob"));
        assert_eq!(c.password, b"p\xffw");
        // Blank password parses (refused later by the store).
        assert_eq!(parse_plain(b"\0bob\0").unwrap().password, b"");
    }

    #[test]
    fn plain_rejections() {
        for bad in [
            &b""[..],
            b"\0",
            b"guest",
            b"\0guest",
            b"\0\0pw",
            b"\0guest\0pw\0",
            b"\0gu\xffest\0pw",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_plain(b"alice\0bob\0pw"),
            Err(AuthError::AuthzidMismatch)
        ));
    }

    #[test]
    fn debug_hides_password() {
        let c = parse_plain(b"\0u\0hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn vhost_user() {
        assert_eq!(split_vhost_user("guest"), (None, "guest"));
        assert_eq!(split_vhost_user("v1:bob"), (Some("v1"), "bob"));
        assert_eq!(split_vhost_user("a:b:bob"), (Some("a:b"), "bob"));
        assert_eq!(split_vhost_user(":bob"), (Some(""), "bob"));
        assert_eq!(split_vhost_user("v:"), (Some("v"), ""));
        assert_eq!(split_vhost_user(""), (None, ""));
    }
}
