//! SCRAM logins against credentials the store derived.

use ferrymq_auth::scram::{generate_nonce, ScramClient};
use ferrymq_auth::{AuthError, AuthStore, PasswordSpec, ScramMechanism, ScramServer, Seed};

fn login(
    store: &AuthStore,
    mech: ScramMechanism,
    user: &str,
    password: &str,
) -> Result<String, AuthError> {
    let (mut client, c1) = ScramClient::new(mech, user, password, &generate_nonce());
    let first = ScramServer::client_first(mech, &c1)?;
    let cred = store.scram_credential(&first.username, mech);
    let (s1, state) = first.server_first(cred.as_ref(), &generate_nonce());
    let c2 = client.server_first(&s1)?;
    let s2 = state.client_final(&c2)?;
    client.server_final(&s2)?;
    Ok(state.username().to_owned())
}

#[test]
fn store_users_log_in_with_both_mechanisms() {
    let s = AuthStore::in_memory(Seed::default()).unwrap();
    s.put_user(
        "kafka,user=1",
        Some(PasswordSpec::Plain("päss".into())),
        vec![],
    )
    .unwrap();
    for mech in ScramMechanism::ALL {
        assert_eq!(
            login(&s, mech, "kafka,user=1", "päss").unwrap(),
            "kafka,user=1"
        );
        assert!(matches!(
            login(&s, mech, "kafka,user=1", "pass"),
            Err(AuthError::ScramInvalidCredentials { .. })
        ));
        // Unknown users fail the same way, at the same step.
        assert!(matches!(
            login(&s, mech, "ghost", "päss"),
            Err(AuthError::ScramInvalidCredentials { .. })
        ));
    }
}

#[test]
fn unknown_user_s1_is_stable() {
    let first = ScramServer::client_first(ScramMechanism::Sha256, b"n,,n=ghost,r=abc").unwrap();
    let (a, _) = first.server_first(None, "xyz");
    let (b, _) = first.server_first(None, "xyz");
    assert_eq!(a, b);
    let other = ScramServer::client_first(ScramMechanism::Sha256, b"n,,n=ghost2,r=abc").unwrap();
    assert_ne!(other.server_first(None, "xyz").0, a);
}

#[test]
fn unusable_server_nonce_is_replaced() {
    let first = ScramServer::client_first(ScramMechanism::Sha256, b"n,,n=u,r=abc").unwrap();
    for bad in ["", "a,b", "sp ace", "é"] {
        let (s1, _) = first.server_first(None, bad);
        let s1 = String::from_utf8(s1).unwrap();
        let nonce = s1.split(',').next().unwrap();
        assert!(nonce.len() > "r=abc".len() + 10, "{s1}");
        assert!(!nonce.contains(' '));
    }
}
