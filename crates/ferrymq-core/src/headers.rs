//! Headers-exchange matching with RabbitMQ semantics: the binding's arguments are compared
//! with the message's `headers` table; `x-match` selects `all` (default), `any`,
//! `all-with-x` or `any-with-x`. Keys starting with `x-` take part only in the `-with-x`
//! modes. A binding value of type void matches any value of a present header.

use amq_protocol::types::{AMQPValue, FieldTable};

/// How a headers binding combines its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl MatchMode {
    /// Reads `x-match` from binding arguments; `None` if it is present but invalid.
    pub fn from_args(args: &FieldTable) -> Option<MatchMode> {
        let Some(v) = args.inner().get("x-match") else {
            return Some(MatchMode::All);
        };
        let s = match v {
            AMQPValue::LongString(s) => s.to_string(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            _ => return None,
        };
        match s.as_str() {
            "all" => Some(MatchMode::All),
            "any" => Some(MatchMode::Any),
            "all-with-x" => Some(MatchMode::AllWithX),
            "any-with-x" => Some(MatchMode::AnyWithX),
            _ => None,
        }
    }
}

/// True if a message carrying `headers` matches a binding with arguments `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = MatchMode::from_args(args).unwrap_or(MatchMode::All);
    let with_x = matches!(mode, MatchMode::AllWithX | MatchMode::AnyWithX);
    let any = matches!(mode, MatchMode::Any | MatchMode::AnyWithX);
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = args.inner().iter().filter(|(k, _)| {
        let k = k.as_str();
        k != "x-match" && (with_x || !k.starts_with("x-"))
    });
    let one = |(k, v): (&amq_protocol::types::ShortString, &AMQPValue)| match headers.get(k) {
        None => false,
        Some(h) => matches!(v, AMQPValue::Void) || h == v,
    };
    if any {
        considered.any(one)
    } else {
        considered.all(one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    #[test]
    fn all_and_any() {
        let all = table(&[("format", s("pdf")), ("type", s("report"))]);
        let any = table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        let pdf_report = table(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("extra", s("1")),
        ]);
        let pdf_log = table(&[("format", s("pdf")), ("type", s("log"))]);
        let none = table(&[]);
        assert!(matches(&all, Some(&pdf_report)));
        assert!(!matches(&all, Some(&pdf_log)));
        assert!(matches(&any, Some(&pdf_log)));
        assert!(!matches(&any, Some(&none)));
        assert!(!matches(&any, None));
        assert!(
            matches(&table(&[]), None),
            "empty all-binding matches everything"
        );
    }

    #[test]
    fn x_keys_only_with_x_modes() {
        let all = table(&[("x-tag", s("a"))]);
        let all_x = table(&[("x-match", s("all-with-x")), ("x-tag", s("a"))]);
        let any_x = table(&[
            ("x-match", s("any-with-x")),
            ("x-tag", s("a")),
            ("k", s("v")),
        ]);
        let msg = table(&[("x-tag", s("b"))]);
        assert!(matches(&all, Some(&msg)), "x- keys ignored in all mode");
        assert!(!matches(&all_x, Some(&msg)));
        assert!(matches(&all_x, Some(&table(&[("x-tag", s("a"))]))));
        assert!(matches(&any_x, Some(&table(&[("x-tag", s("a"))]))));
        assert!(!matches(&any_x, Some(&msg)));
    }

    #[test]
    fn void_matches_presence_and_types_matter() {
        let b = table(&[("k", AMQPValue::Void)]);
        assert!(matches(&b, Some(&table(&[("k", s("anything"))]))));
        assert!(!matches(&b, Some(&table(&[("j", s("x"))]))));
        let n = table(&[("n", AMQPValue::LongInt(1))]);
        assert!(matches(&n, Some(&table(&[("n", AMQPValue::LongInt(1))]))));
        assert!(!matches(&n, Some(&table(&[("n", AMQPValue::LongInt(2))]))));
    }
}
