//! `events::decode` never panics on any bytes, and whatever it accepts
//! re-encodes and decodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = events::decode(data) else { return };
    let bytes = events::encode(&envelope).expect("a decoded envelope re-encodes");
    let again = events::decode(&bytes).expect("re-encoded bytes decode");
    assert_eq!(again, envelope, "decode(encode(e)) != e");
    // Encoding is canonical from here on: v2 bytes round-trip byte for byte.
    assert_eq!(events::encode(&again).expect("encodes again"), bytes);
});
