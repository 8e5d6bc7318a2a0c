//! `ledger::command::parse_line` (one `ledger apply` line) never panics on
//! any UTF-8 text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let _ = ledger::command::parse_line(line);
});
