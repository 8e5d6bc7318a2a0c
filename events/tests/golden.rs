//! Golden bytes: every event kind's v1 encoding is committed under
//! `tests/golden/v1/` and must never change. A failure here means persisted
//! bytes would no longer decode: make a new schema version instead of editing
//! v1. Run with `LEDGER_BLESS_GOLDEN=1` only when adding a new kind or version.

use std::path::PathBuf;

use events::samples::sample;
use events::{decode, encode, EventKind};

fn fixture(kind: EventKind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1").join(format!("{}.bin", kind.name()))
}

#[test]
fn every_kind_matches_its_committed_bytes() {
    let bless = std::env::var_os("LEDGER_BLESS_GOLDEN").is_some();
    for kind in EventKind::ALL {
        let envelope = sample(kind);
        let bytes = encode(&envelope).expect("sample encodes");
        let path = fixture(kind);
        if bless && !path.exists() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden =
            std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        assert_eq!(bytes, golden, "{} encodes differently from its fixture", kind.name());
        assert_eq!(decode(&golden).expect("fixture decodes"), envelope, "{}", kind.name());
    }
}

#[test]
fn fixtures_are_exactly_the_known_kinds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = EventKind::ALL.iter().map(|k| format!("{}.bin", k.name())).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn decode_rejects_garbage_without_panicking() {
    let good = encode(&sample(EventKind::FileStored)).unwrap();
    // Every truncation and a flipped version must be an error, never a panic.
    for cut in 0..good.len() {
        assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut wrong_version = good.clone();
    wrong_version[0] = 9;
    assert!(matches!(decode(&wrong_version), Err(events::EventError::UnknownVersion(9))));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode(&trailing).is_err());
    // A forged length prefix claiming gigabytes must not allocate them.
    let mut huge = vec![1, 0];
    huge.extend_from_slice(&[0xff; 40]);
    assert!(decode(&huge).is_err());
}

#[test]
fn validation_runs_on_both_sides() {
    let mut bad = sample(EventKind::TokensConsumed);
    if let events::Event::TokensConsumed { tokens, .. } = &mut bad.payload {
        *tokens = 0;
    }
    assert!(matches!(encode(&bad), Err(events::EventError::Invalid(_))));

    // Bytes that decode but break a rule (as a forged publish might) are refused.
    let mut forged = encode(&sample(EventKind::TokensConsumed)).unwrap();
    let tenant_at = forged.windows(4).position(|w| w == b"acme").unwrap();
    forged[tenant_at] = b'A';
    assert!(matches!(decode(&forged), Err(events::EventError::Invalid(_))));
}
