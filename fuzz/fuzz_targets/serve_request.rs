//! `ledger::serve::parse_request(subject, body)` never panics on anything a
//! request carries.
//!
//! Input layout: the first byte picks a subject from `SUBJECTS`; an index past
//! the list means "the subject is the input up to the first newline (lossy
//! UTF-8)". The rest of the input is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SUBJECTS: &[&str] = &[
    "ledger.cmd.acme.user.consume_tokens",
    "ledger.cmd.acme.user.upload",
    "ledger.cmd.acme.admin.purchase_addon",
    "ledger.cmd.acme.admin.batch",
    "ledger.cmd.acme.user.batch",
    "ledger.admin.define_plan",
    "ledger.admin.define_addon",
    "ledger.admin.subscribe",
    "ledger.admin.batch",
    "ledger.query.acme.usage",
    "ledger.query.acme.invoice",
    "ledger.query.acme.invoices",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (subject, body) = match SUBJECTS.get(usize::from(selector)) {
        Some(subject) => (subject.to_string(), rest),
        None => {
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let body = rest.get(cut + 1..).unwrap_or(&[]);
            (String::from_utf8_lossy(&rest[..cut]).into_owned(), body)
        }
    };
    let _ = ledger::serve::parse_request(&subject, body);
});
