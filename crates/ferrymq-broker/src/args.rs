//! Reading typed values out of AMQP field tables (declare arguments, headers).

use amq_protocol::types::AMQPValue;

/// The value as a string, if it is a short or long string.
pub fn as_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// The value as an integer, whatever the wire width.
pub fn as_i64(v: &AMQPValue) -> Option<i64> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i as i64,
        AMQPValue::ShortShortUInt(i) => i as i64,
        AMQPValue::ShortInt(i) => i as i64,
        AMQPValue::ShortUInt(i) => i as i64,
        AMQPValue::LongInt(i) => i as i64,
        AMQPValue::LongUInt(i) => i as i64,
        AMQPValue::LongLongInt(i) => i,
        AMQPValue::Timestamp(i) => i as i64,
        _ => return None,
    })
}

/// The value as a boolean.
pub fn as_bool(v: &AMQPValue) -> Option<bool> {
    match v {
        AMQPValue::Boolean(b) => Some(*b),
        _ => None,
    }
}

/// A short human description of a value's type, as used in RabbitMQ's error texts.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Float(_) | AMQPValue::Double(_) => "float",
        AMQPValue::Void => "void",
        _ => "long",
    }
}
