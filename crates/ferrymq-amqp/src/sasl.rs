//! SASL mechanisms offered in `connection.start`: PLAIN and AMQPLAIN, and EXTERNAL
//! on TLS connections whose client certificate was verified.

use amq_protocol::types::parsing::parse_field_table;
use ferrymq_broker::args::as_string;

/// Mechanisms the server offers, space separated as the protocol wants.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// The mechanism that logs in as the verified client certificate's common name.
pub const EXTERNAL: &str = "EXTERNAL";

/// What to offer: EXTERNAL too when the transport verified a client certificate.
pub fn mechanisms(has_peer_identity: bool) -> &'static str {
    if has_peer_identity {
        "PLAIN AMQPLAIN EXTERNAL"
    } else {
        MECHANISMS
    }
}

/// Extracts (user, password) from a `connection.start-ok` response.
pub fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            // authzid NUL authcid NUL password
            let mut parts = response.split(|&b| b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            if parts.next().is_some() {
                return None;
            }
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = parse_field_table(&framed[..]).ok()?;
            let user = table.inner().get("LOGIN").and_then(as_string)?;
            let pass = table.inner().get("PASSWORD").and_then(as_string)?;
            Some((user, pass))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        assert_eq!(credentials("PLAIN", b"guest"), None);
    }

    #[test]
    fn amqplain() {
        let mut t = Vec::new();
        for (k, v) in [("LOGIN", "bob"), ("PASSWORD", "pw")] {
            t.push(k.len() as u8);
            t.extend_from_slice(k.as_bytes());
            t.push(b'S');
            t.extend_from_slice(&(v.len() as u32).to_be_bytes());
            t.extend_from_slice(v.as_bytes());
        }
        assert_eq!(
            credentials("AMQPLAIN", &t),
            Some(("bob".into(), "pw".into()))
        );
    }
}
