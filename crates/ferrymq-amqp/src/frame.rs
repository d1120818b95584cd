//! Splitting the inbound byte stream into frames, with limits checked first.
//!
//! amq-protocol's parser does not enforce `frame_max`; this splitter reads the
//! 7-byte header and refuses an oversized frame before any of its payload is
//! buffered, so a client announcing a 2 GiB frame costs nothing.

use bytes::{Bytes, BytesMut};
use ferrymq_broker::error::AmqpError;

/// Frame type octets.
pub mod kind {
    /// Method frame.
    pub const METHOD: u8 = 1;
    /// Content header frame.
    pub const HEADER: u8 = 2;
    /// Content body frame.
    pub const BODY: u8 = 3;
    /// Heartbeat frame.
    pub const HEARTBEAT: u8 = 8;
}

/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of frame overhead: 7 header + 1 end.
pub const FRAME_OVERHEAD: usize = 8;

/// One inbound frame; `payload` shares the read buffer's memory.
#[derive(Debug)]
pub struct Frame {
    /// Frame type octet.
    pub kind: u8,
    /// Channel number.
    pub channel: u16,
    /// Frame payload.
    pub payload: Bytes,
}

/// Takes the next complete frame off `buf`, if there is one.
///
/// `frame_max` is the negotiated maximum frame size including overhead.
pub fn next_frame(buf: &mut BytesMut, frame_max: usize) -> Result<Option<Frame>, AmqpError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if !matches!(
        kind,
        kind::METHOD | kind::HEADER | kind::BODY | kind::HEARTBEAT
    ) {
        return Err(AmqpError::frame_error(format!("unknown frame type {kind}")));
    }
    if size + FRAME_OVERHEAD > frame_max {
        return Err(AmqpError::frame_error(format!(
            "frame size {} exceeds negotiated frame_max {frame_max}",
            size + FRAME_OVERHEAD
        )));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "invalid frame end octet 0x{:02x}",
            buf[total - 1]
        )));
    }
    let mut frame = buf.split_to(total);
    frame.truncate(total - 1);
    let payload = frame.split_off(7).freeze();
    Ok(Some(Frame {
        kind,
        channel,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_refused_before_payload() {
        let mut b = BytesMut::from(&[1u8, 0, 1, 0x7f, 0xff, 0xff, 0xff][..]);
        let e = next_frame(&mut b, 131072).unwrap_err();
        assert_eq!(e.code, 501);
    }

    #[test]
    fn splits_frames() {
        let mut b = BytesMut::from(
            &[
                8u8, 0, 0, 0, 0, 0, 0, 0xCE, 3, 0, 1, 0, 0, 0, 2, b'h', b'i', 0xCE, 3,
            ][..],
        );
        let f = next_frame(&mut b, 4096).unwrap().unwrap();
        assert_eq!(f.kind, kind::HEARTBEAT);
        let f = next_frame(&mut b, 4096).unwrap().unwrap();
        assert_eq!((f.channel, &f.payload[..]), (1, &b"hi"[..]));
        assert!(next_frame(&mut b, 4096).unwrap().is_none());
    }

    #[test]
    fn bad_end_octet() {
        let mut b = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xCF][..]);
        assert_eq!(next_frame(&mut b, 4096).unwrap_err().code, 501);
    }
}
