//! The byte format of an event on the log.
//!
//! Layout: a 2-byte little-endian schema version, then the envelope encoded
//! by bincode with [`config`]. Decoding dispatches on the version and upcasts
//! older shapes to the current one, so folds only see [`crate::Envelope`].
//! Both directions validate: nothing malformed is written, and nothing
//! malformed that somebody else wrote is handed to a fold.

use sha2::{Digest, Sha256};

use crate::validate::validate;
use crate::Envelope;

/// The schema version [`encode`] writes.
pub const SCHEMA_VERSION: u16 = 3;

/// No event may encode larger than this; decoding refuses to allocate past it,
/// so a forged length prefix cannot exhaust memory.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The one bincode configuration for persisted events. Written out because
/// changing any of these options changes every stored byte: little-endian,
/// variable-length integers (small counts take one byte), and a hard decode
/// limit.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_EVENT_BYTES>()
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The event breaks a schema rule. From `encode`, a bug in the writer;
    /// from `decode`, a message that did not come from the ledger: skip it
    /// and report it, never apply it.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The bytes are not a known schema version: a newer writer or a foreign
    /// message. Upgrade the reader, or report the message.
    #[error("unknown event schema version {0}")]
    UnknownVersion(u16),
    /// The bytes do not decode as the version they claim. Report the message.
    #[error("undecodable event: {0}")]
    Decode(String),
    /// Encoding failed or exceeded [`MAX_EVENT_BYTES`]: the writer must split
    /// or shorten the event.
    #[error("cannot encode event: {0}")]
    Encode(String),
}

/// Validates and encodes an envelope for the log.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, EventError> {
    validate(envelope).map_err(EventError::Invalid)?;
    let mut bytes = Vec::with_capacity(160);
    bytes.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(envelope, &mut bytes, config())
        .map_err(|e| EventError::Encode(e.to_string()))?;
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(EventError::Encode(format!(
            "{} bytes is over the {MAX_EVENT_BYTES}-byte limit",
            bytes.len()
        )));
    }
    // The decode limit counts the memory a decode claims (a list of N lines
    // claims N x the size of a line in memory), not the bytes read, so an
    // event can encode within the limit and still not decode. Every reader
    // would then skip it as foreign. Anything big enough to be at risk is
    // decoded once here, so the log only ever holds what its readers read.
    if bytes.len() > ROUND_TRIP_CHECK_BYTES {
        decode(&bytes).map_err(|e| EventError::Encode(format!("the event would not decode again: {e}")))?;
    }
    Ok(bytes)
}

/// Events at least this large are decoded once after encoding (see
/// [`encode`]). A value takes at most ~24x its smallest encoding in memory
/// (an empty string: 1 byte encoded, 24 in memory), so smaller events cannot
/// reach the decode limit; ordinary events (a few hundred bytes) never pay
/// for the check.
const ROUND_TRIP_CHECK_BYTES: usize = MAX_EVENT_BYTES / 32;

/// Decodes, upcasts and validates an event read from the log.
pub fn decode(bytes: &[u8]) -> Result<Envelope, EventError> {
    if bytes.len() < 2 {
        return Err(EventError::Decode(format!("{} bytes is too short", bytes.len())));
    }
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(EventError::Decode(format!("{} bytes is over the limit", bytes.len())));
    }
    let version = u16::from_le_bytes([bytes[0], bytes[1]]);
    let body = &bytes[2..];
    let envelope = match version {
        1 => crate::v2::EnvelopeV2::from(decode_exact::<crate::v1::EnvelopeV1>(body)?).into(),
        2 => decode_exact::<crate::v2::EnvelopeV2>(body)?.into(),
        3 => decode_exact::<crate::v3::EnvelopeV3>(body)?,
        other => return Err(EventError::UnknownVersion(other)),
    };
    validate(&envelope).map_err(EventError::Invalid)?;
    Ok(envelope)
}

fn decode_exact<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EventError> {
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| EventError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(EventError::Decode(format!("{} trailing bytes after the event", body.len() - read)));
    }
    Ok(value)
}

/// The canonical bytes of `value`: bincode with the events' [`config`]
/// (little-endian, variable-length integers; the decode limit plays no part
/// in encoding), without the schema-version prefix. For digests and other
/// audit formats that must never move: hash these, never `Debug` output.
/// Pass only frozen shapes (the `v1`/`v2` types, or structs of them, whose
/// field order is the byte order): a type whose fields change changes these
/// bytes.
///
/// # Panics
/// When `value`'s `Serialize` fails, which plain data (structs, enums,
/// strings, integers, options, sequences of known length) never does.
pub fn canonical_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("plain data always encodes")
}

/// SHA-256 of an event's encoded bytes: the link in a tenant's hash chain
/// (the next event's `prev_hash`).
pub fn event_hash(encoded: &[u8]) -> [u8; 32] {
    Sha256::digest(encoded).into()
}

#[cfg(test)]
mod tests {
    use super::canonical_bytes;

    #[test]
    fn canonical_bytes_are_little_endian_varint_bincode() {
        // u64 300: marker 251 then u16 LE; str: varint length then UTF-8;
        // option: 0 or 1 then the value; array: its bytes, no length.
        let value = (300u64, "ab", Some(7u32), None::<u8>, [9u8; 2]);
        assert_eq!(canonical_bytes(&value), [251, 44, 1, 2, b'a', b'b', 1, 7, 0, 9, 9]);
    }
}
