//! AMQP reply codes and the errors the domain raises with them.

use std::fmt;

/// An error that maps onto an AMQP `channel.close` or `connection.close`.
///
/// The text is already in RabbitMQ's wording (`NOT_FOUND - no queue 'x' in vhost '/'`)
/// because client libraries and their test suites match on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    /// The AMQP reply code (404, 406, 530, …).
    pub code: u16,
    /// The full reply text including the code's name prefix.
    pub text: String,
}

/// Reply codes of AMQP 0-9-1 that the broker sends.
pub mod code {
    /// Message too large for the broker's limits.
    pub const CONTENT_TOO_LARGE: u16 = 311;
    /// Mandatory message could not be routed.
    pub const NO_ROUTE: u16 = 312;
    /// The client is not allowed to do this.
    pub const ACCESS_REFUSED: u16 = 403;
    /// The named object does not exist.
    pub const NOT_FOUND: u16 = 404;
    /// Exclusive access is held by another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// Arguments do not match, or a precondition fails.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// The connection was closed by an operator.
    pub const CONNECTION_FORCED: u16 = 320;
    /// A malformed frame.
    pub const FRAME_ERROR: u16 = 501;
    /// A malformed method payload.
    pub const SYNTAX_ERROR: u16 = 502;
    /// A method that is invalid in the current state.
    pub const COMMAND_INVALID: u16 = 503;
    /// A channel that is not open, or not allowed.
    pub const CHANNEL_ERROR: u16 = 504;
    /// A frame that was not expected in this state.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// A resource limit was hit.
    pub const RESOURCE_ERROR: u16 = 506;
    /// Access to a vhost is not allowed.
    pub const NOT_ALLOWED: u16 = 530;
    /// A feature the broker does not implement.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// A broker-side fault.
    pub const INTERNAL_ERROR: u16 = 541;
}

fn name_of(c: u16) -> &'static str {
    match c {
        code::CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
        code::NO_ROUTE => "NO_ROUTE",
        code::ACCESS_REFUSED => "ACCESS_REFUSED",
        code::NOT_FOUND => "NOT_FOUND",
        code::RESOURCE_LOCKED => "RESOURCE_LOCKED",
        code::PRECONDITION_FAILED => "PRECONDITION_FAILED",
        code::CONNECTION_FORCED => "CONNECTION_FORCED",
        code::FRAME_ERROR => "FRAME_ERROR",
        code::SYNTAX_ERROR => "SYNTAX_ERROR",
        code::COMMAND_INVALID => "COMMAND_INVALID",
        code::CHANNEL_ERROR => "CHANNEL_ERROR",
        code::UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        code::RESOURCE_ERROR => "RESOURCE_ERROR",
        code::NOT_ALLOWED => "NOT_ALLOWED",
        code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        _ => "INTERNAL_ERROR",
    }
}

impl AmqpError {
    /// An error with `code`; the text gets the code's name as prefix and is cut
    /// to the 255 bytes a reply text can carry on the wire.
    pub fn new(code: u16, detail: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", name_of(code), detail);
        if text.len() > 255 {
            let mut cut = 255;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        AmqpError { code, text }
    }
    /// 404 NOT_FOUND.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(code::NOT_FOUND, detail)
    }
    /// 406 PRECONDITION_FAILED.
    pub fn precondition_failed(detail: impl fmt::Display) -> Self {
        Self::new(code::PRECONDITION_FAILED, detail)
    }
    /// 403 ACCESS_REFUSED.
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(code::ACCESS_REFUSED, detail)
    }
    /// 405 RESOURCE_LOCKED.
    pub fn resource_locked(detail: impl fmt::Display) -> Self {
        Self::new(code::RESOURCE_LOCKED, detail)
    }
    /// 530 NOT_ALLOWED.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(code::NOT_ALLOWED, detail)
    }
    /// 540 NOT_IMPLEMENTED.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(code::NOT_IMPLEMENTED, detail)
    }
    /// 503 COMMAND_INVALID.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(code::COMMAND_INVALID, detail)
    }
    /// 504 CHANNEL_ERROR.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(code::CHANNEL_ERROR, detail)
    }
    /// 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(code::UNEXPECTED_FRAME, detail)
    }
    /// 501 FRAME_ERROR.
    pub fn frame_error(detail: impl fmt::Display) -> Self {
        Self::new(code::FRAME_ERROR, detail)
    }
    /// 502 SYNTAX_ERROR.
    pub fn syntax_error(detail: impl fmt::Display) -> Self {
        Self::new(code::SYNTAX_ERROR, detail)
    }
    /// 541 INTERNAL_ERROR.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(code::INTERNAL_ERROR, detail)
    }

    /// Whether this code closes the whole connection rather than one channel.
    pub fn is_hard(&self) -> bool {
        matches!(
            self.code,
            code::CONNECTION_FORCED
                | code::FRAME_ERROR
                | code::SYNTAX_ERROR
                | code::COMMAND_INVALID
                | code::CHANNEL_ERROR
                | code::UNEXPECTED_FRAME
                | code::RESOURCE_ERROR
                | code::NOT_ALLOWED
                | code::NOT_IMPLEMENTED
                | code::INTERNAL_ERROR
        )
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl std::error::Error for AmqpError {}

/// Result type of domain operations.
pub type Result<T> = std::result::Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_fit_a_short_string() {
        let e = AmqpError::not_found("é".repeat(300));
        assert!(e.text.len() <= 255);
        assert!(e.text.starts_with("NOT_FOUND - é"));
    }
}
