//! Users, vhosts, permissions, password hashes and SASL for FerryMQ.
//!
//! Pure: no tokio, no network; the only I/O is [`store::AuthStore`]'s snapshot file.
//! The protocol fronts use it like this:
//!
//! - **AMQP** `connection.start-ok` PLAIN → [`sasl::parse_plain`] →
//!   [`AuthStore::authenticate_plain`]; `connection.open` → [`AuthStore::open_vhost`]
//!   (530 on error); every declare/bind/publish/consume → [`Access::check`] /
//!   [`Access::check_topic`] (403 with `ACCESS_REFUSED - ` + the error's text).
//! - **Kafka** SaslHandshake/SaslAuthenticate: PLAIN as above (optionally
//!   [`sasl::split_vhost_user`]); SCRAM through [`scram::ScramServer`] with
//!   [`AuthStore::scram_credential`].
//! - **HTTP** management and boot-time definitions: [`definitions::Definitions`],
//!   [`AuthStore::import_access`], [`AuthStore::export_access`] and the write methods.
//!
//! Connections keep their [`Access`] with the [`AuthStore::version`] it was fetched at,
//! and re-fetch when the version moves.

pub mod acl;
mod b64;
pub mod definitions;
pub mod error;
pub mod model;
pub mod password;
pub mod perm;
pub mod sasl;
pub mod scram;
pub mod store;

pub use acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, Decision, PatternType, ResourceType,
};
pub use definitions::Definitions;
pub use error::{AuthError, SaslError, ScramError};
pub use model::{User, UserLimits, VhostInfo, VhostLimits};
pub use password::{HashingAlgorithm, PasswordHash};
pub use perm::{
    Access, AccessRefused, CompiledPermission, Perm, Permission, ResourceKind, TopicPermission,
};
pub use sasl::{parse_plain, split_vhost_user, PlainCredentials};
pub use scram::{ClientFirst, ScramCredential, ScramMechanism, ScramServer, ScramServerState};
pub use store::{AclSet, AuthStore, PasswordSpec, PermissionEntry, Seed, TopicPermissionEntry};
