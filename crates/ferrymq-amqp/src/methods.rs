//! Which (class, method) pairs exist in AMQP 0-9-1.
//!
//! Checked before decoding so that an unknown method is told apart from a
//! malformed one (540 versus 502).

/// Whether `class.method` is a method of AMQP 0-9-1.
pub fn is_known(class: u16, method: u16) -> bool {
    let methods: &[u16] = match class {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method)
}

/// Decodes a `basic.publish` payload (class, method, reserved short, exchange,
/// routing key, bits) without the generic parser: it is the hottest method.
/// Returns `None` if malformed.
pub fn parse_publish(p: &[u8]) -> Option<(&str, &str, bool, bool)> {
    let mut at = 6usize; // class id, method id, reserved ticket
    let mut short = || -> Option<&str> {
        let n = *p.get(at)? as usize;
        let s = std::str::from_utf8(p.get(at + 1..at + 1 + n)?).ok()?;
        at += 1 + n;
        Some(s)
    };
    let exchange = short()?;
    let routing_key = short()?;
    let bits = *p.get(at)?;
    (p.len() == at + 1).then_some((exchange, routing_key, bits & 1 != 0, bits & 2 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_fast_path_matches_layout() {
        let p = [0, 60, 0, 40, 0, 0, 2, b'e', b'x', 1, b'k', 3];
        assert_eq!(parse_publish(&p), Some(("ex", "k", true, true)));
        assert_eq!(parse_publish(&p[..p.len() - 1]), None);
    }
}
