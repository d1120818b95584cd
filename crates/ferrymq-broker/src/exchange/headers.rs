//! Headers exchange matching (`x-match` all / any / all-with-x / any-with-x).

use amq_protocol::types::{AMQPValue, FieldTable};

/// How a headers binding combines its header predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersMatch {
    /// Every listed header must match (the default).
    All,
    /// At least one listed header must match.
    Any,
}

/// Whether a message with `headers` matches a binding with `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let (mode, include_x) = match args
        .inner()
        .get("x-match")
        .and_then(crate::args::as_string)
        .as_deref()
    {
        Some("any") => (HeadersMatch::Any, false),
        Some("any-with-x") => (HeadersMatch::Any, true),
        Some("all-with-x") => (HeadersMatch::All, true),
        _ => (HeadersMatch::All, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = 0;
    let mut matched = 0;
    for (key, expected) in args.inner() {
        if key.as_str() == "x-match" || (!include_x && key.as_str().starts_with("x-")) {
            continue;
        }
        considered += 1;
        let ok = match headers.get(key.as_str()) {
            None => false,
            // A void binding value matches on presence alone.
            Some(actual) => matches!(expected, AMQPValue::Void) || values_equal(expected, actual),
        };
        if ok {
            matched += 1;
        }
    }
    match mode {
        HeadersMatch::All => matched == considered,
        HeadersMatch::Any => matched > 0,
    }
}

/// Compares header values, treating the two string kinds and integer widths as equal.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (crate::args::as_string(a), crate::args::as_string(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (crate::args::as_i64(a), crate::args::as_i64(b)) {
        return x == y;
    }
    a == b
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

    #[test]
    fn all_and_any() {
        let s = |v: &str| AMQPValue::LongString(v.into());
        let binding_all = table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
        let binding_any = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        let h = table(&[("a", s("1"))]);
        assert!(!matches(&binding_all, Some(&h)));
        assert!(matches(&binding_any, Some(&h)));
        let h2 = table(&[("a", s("1")), ("b", AMQPValue::ShortString("2".into()))]);
        assert!(matches(&binding_all, Some(&h2)));
        assert!(!matches(&binding_any, None));
        let int_binding = table(&[("n", AMQPValue::LongInt(5))]);
        assert!(matches(
            &int_binding,
            Some(&table(&[("n", AMQPValue::ShortShortUInt(5))]))
        ));
    }
}
