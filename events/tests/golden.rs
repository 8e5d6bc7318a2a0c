//! Golden bytes: every event kind's encoding in each schema version is
//! committed under `tests/golden/v<N>/` and must never change. A failure here
//! means persisted bytes would no longer decode: make a new schema version
//! instead of editing an old one. Run with `LEDGER_BLESS_GOLDEN=1` only when
//! adding a new kind or version (it writes missing fixtures, never replaces).

use std::path::PathBuf;

use events::samples::{sample, sample_keyed, sample_offline, sample_v2};
use events::{decode, encode, EventKind};

fn dir(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{version}"))
}

fn golden(version: u16, name: &str, current: &[u8]) -> Vec<u8> {
    let path = dir(version).join(format!("{name}.bin"));
    if std::env::var_os("LEDGER_BLESS_GOLDEN").is_some() && !path.exists() {
        std::fs::create_dir_all(dir(version)).unwrap();
        std::fs::write(&path, current).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()))
}

#[test]
fn every_kind_matches_its_committed_v3_bytes() {
    let mut cases: Vec<(String, events::Envelope)> =
        EventKind::ALL.iter().map(|k| (k.name().to_string(), sample(*k))).collect();
    cases.push(("tokens_consumed_offline".into(), sample_offline()));
    cases.push(("seats_changed_keyed".into(), sample_keyed()));
    for (name, envelope) in cases {
        let bytes = encode(&envelope).expect("sample encodes");
        assert_eq!(&bytes[..2], &3u16.to_le_bytes());
        let golden = golden(3, &name, &bytes);
        assert_eq!(bytes, golden, "{name} encodes differently from its fixture");
        assert_eq!(decode(&golden).expect("fixture decodes"), envelope, "{name}");
    }
}

#[test]
fn v2_bytes_still_decode_and_upcast() {
    let mut cases: Vec<(String, events::Envelope)> = EventKind::ALL
        .iter()
        .filter(|k| k.since_schema() <= 2)
        .map(|k| (k.name().to_string(), sample_v2(*k).into()))
        .collect();
    cases.push(("tokens_consumed_offline".into(), sample_offline()));
    for (name, upcast) in cases {
        let path = dir(2).join(format!("{name}.bin"));
        let golden =
            std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        assert_eq!(&golden[..2], &2u16.to_le_bytes());
        assert_eq!(upcast.key, None);
        assert_eq!(decode(&golden).expect("v2 fixture decodes"), upcast, "{name}");
    }
}

#[test]
fn v1_bytes_still_decode_and_upcast() {
    for kind in EventKind::ALL.into_iter().filter(|k| k.since_schema() == 1) {
        let path = dir(1).join(format!("{}.bin", kind.name()));
        let golden =
            std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        assert_eq!(&golden[..2], &1u16.to_le_bytes());
        let upcast: events::Envelope = sample_v2(kind).into();
        assert_eq!(upcast.offline, None);
        assert_eq!(decode(&golden).expect("v1 fixture decodes"), upcast, "{}", kind.name());
    }
}

#[test]
fn fixtures_are_exactly_the_known_kinds() {
    for version in [1u16, 2, 3] {
        let mut names: Vec<String> = std::fs::read_dir(dir(version))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = EventKind::ALL
            .iter()
            .filter(|k| k.since_schema() <= version)
            .map(|k| format!("{}.bin", k.name()))
            .collect();
        if version >= 2 {
            expected.push("tokens_consumed_offline.bin".into());
        }
        if version >= 3 {
            expected.push("seats_changed_keyed.bin".into());
        }
        expected.sort();
        assert_eq!(names, expected, "fixtures of v{version}");
    }
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
    let mut huge = vec![2, 0];
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

    // Only uploads and token use can be admitted offline, and not after recording.
    let mut offline_seats = sample(EventKind::SeatsChanged);
    offline_seats.offline = Some(events::Offline { admitted_at_us: offline_seats.at_us });
    assert!(matches!(encode(&offline_seats), Err(events::EventError::Invalid(_))));
    let mut admitted_later = sample_offline();
    admitted_later.offline = Some(events::Offline { admitted_at_us: admitted_later.at_us + 1 });
    assert!(matches!(encode(&admitted_later), Err(events::EventError::Invalid(_))));

    // Bytes that decode but break a rule (as a forged publish might) are refused.
    let mut forged = encode(&sample(EventKind::TokensConsumed)).unwrap();
    let tenant_at = forged.windows(4).position(|w| w == b"acme").unwrap();
    forged[tenant_at] = b'A';
    assert!(matches!(decode(&forged), Err(events::EventError::Invalid(_))));
}
