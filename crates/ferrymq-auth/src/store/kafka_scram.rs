//! Kafka's AlterUserScramCredentials on the user store: Kafka users exist through their
//! credentials, FerryMQ users are RabbitMQ users, so an upsertion for an unknown name
//! creates a passwordless user (no tags, no permissions: SCRAM logins only, and it must
//! still be given a permission row to use a vhost).

use std::sync::Arc;

use super::{check_name, AuthStore};
use crate::error::AuthError;
use crate::model::{User, UserLimits};
use crate::password::PasswordHash;
use crate::scram::ScramCredential;

impl AuthStore {
    /// Sets (replaces) one SCRAM credential of `user`, creating the user (passwordless,
    /// no tags) if it does not exist. Leaves a RabbitMQ password hash alone.
    pub fn upsert_scram_credential(
        &self,
        user: &str,
        credential: ScramCredential,
    ) -> Result<(), AuthError> {
        check_name("user", user)?;
        self.update(|db| {
            let mut u = match db.users.get(user) {
                Some(u) => User::clone(u),
                None => User {
                    name: user.to_owned(),
                    password_hash: PasswordHash::passwordless(),
                    tags: Vec::new(),
                    limits: UserLimits::default(),
                    scram: Vec::new(),
                },
            };
            u.scram.retain(|c| c.mechanism != credential.mechanism);
            u.scram.push(credential);
            u.scram.sort_by_key(|c| c.mechanism);
            db.users.insert(user.to_owned(), Arc::new(u));
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::scram::{ScramCredential, ScramMechanism};
    use crate::store::{AuthStore, Seed};

    #[test]
    fn upsert_creates_a_passwordless_user_and_replaces_by_mechanism() {
        let s = AuthStore::in_memory(Seed::default()).unwrap();
        let c =
            ScramCredential::derive_with_salt(ScramMechanism::Sha256, "pw", b"salt", 4096).unwrap();
        s.upsert_scram_credential("k", c.clone()).unwrap();
        let u = s.user("k").unwrap();
        assert!(u.password_hash.is_passwordless());
        assert!(u.tags.is_empty());
        assert_eq!(u.scram, vec![c]);
        let c2 = ScramCredential::derive_with_salt(ScramMechanism::Sha256, "pw2", b"salt", 5000)
            .unwrap();
        s.upsert_scram_credential("k", c2.clone()).unwrap();
        assert_eq!(s.user("k").unwrap().scram, vec![c2]);
        assert!(s.access("k", "/").is_none());
        assert!(s.upsert_scram_credential("", c_for_empty()).is_err());
    }

    fn c_for_empty() -> ScramCredential {
        ScramCredential::derive_with_salt(ScramMechanism::Sha512, "x", b"s", 4096).unwrap()
    }
}
