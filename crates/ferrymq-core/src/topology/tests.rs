use super::*;

fn ex(name: &str, kind: ExchangeKind) -> ExchangeSpec {
    ExchangeSpec {
        name: name.into(),
        kind,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    }
}

fn q(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        durable: false,
        exclusive_owner: None,
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

fn bind(t: &mut Topology<String>, src: &str, dest: Dest, key: &str) {
    t.bind(
        Binding {
            source: src.into(),
            dest,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        },
        1,
    )
    .unwrap();
}

fn route(t: &Topology<String>, ex: &str, key: &str) -> Vec<String> {
    let mut out = vec![];
    t.route(ex, key, None, &mut out).unwrap();
    out.sort();
    out
}

fn topo(queues: &[&str]) -> Topology<String> {
    let mut t = Topology::new();
    for name in queues {
        t.declare_queue(q(name), false, 1, |s| s.name.to_string())
            .unwrap();
    }
    t
}

#[test]
fn default_direct_fanout() {
    let mut t = topo(&["a", "b"]);
    assert_eq!(route(&t, "", "a"), vec!["a"]);
    assert!(route(&t, "", "zz").is_empty());
    bind(&mut t, "amq.direct", Dest::Queue("a".into()), "k");
    bind(&mut t, "amq.direct", Dest::Queue("b".into()), "k");
    bind(&mut t, "amq.direct", Dest::Queue("b".into()), "j");
    assert_eq!(route(&t, "amq.direct", "k"), vec!["a", "b"]);
    assert_eq!(route(&t, "amq.direct", "j"), vec!["b"]);
    bind(&mut t, "amq.fanout", Dest::Queue("a".into()), "x");
    bind(&mut t, "amq.fanout", Dest::Queue("a".into()), "y");
    assert_eq!(
        route(&t, "amq.fanout", "anything"),
        vec!["a"],
        "deduplicated"
    );
}

#[test]
fn exchange_to_exchange_with_cycle() {
    let mut t = topo(&["a"]);
    t.declare_exchange(ex("e1", ExchangeKind::Fanout), false)
        .unwrap();
    t.declare_exchange(ex("e2", ExchangeKind::Topic), false)
        .unwrap();
    bind(&mut t, "e1", Dest::Exchange("e2".into()), "");
    bind(&mut t, "e2", Dest::Exchange("e1".into()), "#");
    bind(&mut t, "e2", Dest::Queue("a".into()), "x.*");
    assert_eq!(route(&t, "e1", "x.y"), vec!["a"]);
    assert!(route(&t, "e1", "y").is_empty());
}

#[test]
fn alternate_exchange_takes_unroutable_messages() {
    let mut t = topo(&["routed", "fallback"]);
    let mut ae = ex("ae", ExchangeKind::Fanout);
    ae.internal = true;
    ae.arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("x".into()),
    );
    t.declare_exchange(ae, false).unwrap();
    let mut x = ex("x", ExchangeKind::Direct);
    x.arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    t.declare_exchange(x, false).unwrap();
    bind(&mut t, "x", Dest::Queue("routed".into()), "k");
    assert_eq!(route(&t, "x", "k"), vec!["routed"]);
    assert!(
        route(&t, "x", "other").is_empty(),
        "AE without bindings: nothing, no loop"
    );
    bind(&mut t, "ae", Dest::Queue("fallback".into()), "");
    assert_eq!(route(&t, "x", "other"), vec!["fallback"]);
    assert_eq!(
        route(&t, "x", "k"),
        vec!["routed"],
        "AE only when nothing routes"
    );
}

#[test]
fn declare_rules() {
    let mut t = topo(&["a"]);
    assert!(matches!(
        t.declare_exchange(ex("amq.foo", ExchangeKind::Direct), false),
        Err(CoreError::AccessRefused(_))
    ));
    t.declare_exchange(ex("e", ExchangeKind::Direct), false)
        .unwrap();
    let err = t
        .declare_exchange(ex("e", ExchangeKind::Fanout), false)
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Precondition(ref m) if m.contains("'type'")),
        "{err:?}"
    );
    assert!(matches!(
        t.declare_exchange(ex("nope", ExchangeKind::Fanout), true),
        Err(CoreError::NotFound { .. })
    ));
    let mut durable = q("a");
    durable.durable = true;
    assert!(matches!(
        t.declare_queue(durable, false, 1, |s| s.name.to_string()),
        Err(CoreError::Precondition(_))
    ));
    let mut excl = q("x");
    excl.exclusive_owner = Some(7);
    t.declare_queue(excl, false, 7, |s| s.name.to_string())
        .unwrap();
    assert!(matches!(
        t.declare_queue(q("x"), true, 8, |s| s.name.to_string()),
        Err(CoreError::ResourceLocked(_))
    ));
}

#[test]
fn queue_argument_validation() {
    let check = |k: &str, v: AMQPValue| {
        let mut t = FieldTable::default();
        t.insert(k.into(), v);
        validate_queue_args("/", "q", &t)
    };
    assert!(check("x-max-length", AMQPValue::LongInt(10)).is_ok());
    assert!(check("x-max-length", AMQPValue::LongString("ten".into())).is_err());
    assert!(check("x-message-ttl", AMQPValue::LongInt(-5)).is_err());
    assert!(check("x-expires", AMQPValue::LongInt(0)).is_err());
    assert!(check("x-max-priority", AMQPValue::LongInt(256)).is_err());
    assert!(check("x-overflow", AMQPValue::LongString("drop-head".into())).is_ok());
    assert!(check("x-overflow", AMQPValue::LongString("nope".into())).is_err());
    assert!(check("x-custom", AMQPValue::Void).is_ok());
    assert!(check(
        "x-dead-letter-routing-key",
        AMQPValue::LongString("k".into())
    )
    .is_err());
}

#[test]
fn extension_types_validate_and_route_like_their_base() {
    let mut t = topo(&["a", "b"]);
    let mut d = ex("d", ExchangeKind::Delayed);
    assert!(matches!(
        t.declare_exchange(d.clone(), false),
        Err(CoreError::Precondition(_))
    ));
    d.arguments.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("topic".into()),
    );
    t.declare_exchange(d, false).unwrap();
    bind(&mut t, "d", Dest::Queue("a".into()), "x.#");
    assert_eq!(route(&t, "d", "x.y.z"), vec!["a"]);
    assert!(route(&t, "d", "y").is_empty());
    assert_eq!(
        ExchangeKind::parse("x-delayed-message"),
        Some(ExchangeKind::Delayed)
    );
    assert!(matches!(
        t.declare_exchange(ex("dd", ExchangeKind::Deduplication), false),
        Err(CoreError::Precondition(_))
    ));
    let mut dd = ex("dd", ExchangeKind::Deduplication);
    dd.arguments
        .insert("x-cache-size".into(), AMQPValue::LongInt(10));
    t.declare_exchange(dd, false).unwrap();
    bind(&mut t, "dd", Dest::Queue("a".into()), "k1");
    bind(&mut t, "dd", Dest::Queue("b".into()), "k2");
    assert_eq!(route(&t, "dd", "whatever"), vec!["a", "b"], "fanout-like");
}

#[test]
fn several_keys_reach_each_queue_once() {
    let mut t = topo(&["a", "b", "c"]);
    bind(&mut t, "amq.direct", Dest::Queue("a".into()), "ka");
    bind(&mut t, "amq.direct", Dest::Queue("b".into()), "kb");
    bind(&mut t, "amq.direct", Dest::Queue("b".into()), "kb2");
    bind(&mut t, "amq.topic", Dest::Queue("c".into()), "c.*");
    let keys = |t: &Topology<String>, ex: &str, keys: &[&str]| {
        let mut out = vec![];
        t.route_keys(ex, keys, None, &mut out).unwrap();
        out.sort();
        out
    };
    assert_eq!(
        keys(&t, "amq.direct", &["ka", "kb", "kb2", "zz"]),
        vec!["a", "b"]
    );
    assert_eq!(keys(&t, "amq.topic", &["x", "c.1", "c.2"]), vec!["c"]);
    assert_eq!(keys(&t, "", &["a", "c", "a", "nope"]), vec!["a", "c"]);
}

#[test]
fn deletes_cascade() {
    let mut t = topo(&["a", "b"]);
    let mut ad = ex("ad", ExchangeKind::Direct);
    ad.auto_delete = true;
    t.declare_exchange(ad, false).unwrap();
    bind(&mut t, "ad", Dest::Queue("a".into()), "k");
    assert!(matches!(
        t.delete_exchange("ad", true),
        Err(CoreError::Precondition(_))
    ));
    t.remove_queue("a");
    assert!(
        t.exchange("ad").is_none(),
        "auto-delete exchange lost its last binding"
    );
    assert_eq!(t.bindings().count(), 0);
    t.delete_exchange("missing", false).unwrap();
}
