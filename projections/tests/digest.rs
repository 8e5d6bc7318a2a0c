//! The invoice inputs digest: pinned bytes for both versions, the hand-written
//! v1 against the `Debug` text it froze, and verification across versions.

use events::samples::sample;
use events::v1::{AddonV1, GrantsV1, PlanV1, TokenOverageV1};
use events::{Envelope, EventKind, Payment, CATALOG_TENANT};
use projections::domain::{CatalogState, Fact, Purchase, PurchaseStatus, Segment, TenantState};
use projections::invoice::{
    check_recorded_invoice, digest_verifies, inputs_digest_versioned, inputs_preimage, price_period,
    recorded_digest_version, same_charges, DigestMatch, DigestVersion, InvoiceMismatch, INPUTS_TAG_V2,
    INPUTS_TAG_V3,
};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

// The history is hashed from its encoding, which is schema v3 since
// invoice digests v3: the v1 and v2 pins below are those algorithms over
// today's bytes (their layouts are pinned byte by byte further down).

/// v3 digest of [`fixed`]'s period 0: the bytes every invoice of that
/// history records now. Changing it breaks `audit verify` for recorded
/// invoices.
const FIXED_V3: &str = "a5eb8dcb1edfad8c536e3789d6fb21a8546b6f71829b095d6aec63c58c03a33b";
/// v2 digest of the same inputs: what an invoice recorded before v3 carries.
const FIXED_V2: &str = "dc7f7492d93adf0083480de96518c0a84807b52217528424e4e960b2ed50d53a";
/// v1 digest of the same inputs: what an invoice recorded before v2 carries.
const FIXED_V1: &str = "8a5b96841f8e53a7eb553c39ff2129693b1995d8619c2431f7c9a1c893224cfa";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// The digest exactly as v1 was first computed, through `Debug`: the
/// reference the hand-written v1 must reproduce.
fn debug_based_v1(state: &TenantState, catalog: &CatalogState, k: u32) -> (Vec<u8>, [u8; 32]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&state.chain.last_position.to_le_bytes());
    bytes.extend_from_slice(&state.chain.last_hash);
    bytes.extend_from_slice(&k.to_le_bytes());
    let mut plans: Vec<&str> = state.segments.iter().map(|s| s.plan.as_str()).collect();
    plans.sort_unstable();
    plans.dedup();
    for id in plans {
        bytes.extend_from_slice(format!("{:?}", catalog.plans.get(id)).as_bytes());
    }
    let mut addons: Vec<&str> = state.purchases.values().map(|p| p.addon.as_str()).collect();
    addons.sort_unstable();
    addons.dedup();
    for id in addons {
        bytes.extend_from_slice(format!("{:?}", catalog.addons.get(id)).as_bytes());
    }
    let digest = Sha256::digest(&bytes).into();
    (bytes, digest)
}

/// Folds envelopes as the ledger writes them: positions from 1, each
/// tenant's (and the catalog's) events hash-chained.
fn fold(envelopes: Vec<Envelope>) -> (CatalogState, TenantState) {
    let mut catalog = CatalogState::default();
    let mut tenant = TenantState::default();
    for (i, mut envelope) in envelopes.into_iter().enumerate() {
        let catalog_fact = envelope.tenant == CATALOG_TENANT;
        envelope.prev_hash = if catalog_fact { catalog.chain.last_hash } else { tenant.chain.last_hash };
        let hash = events::event_hash(&events::encode(&envelope).unwrap());
        let fact = Fact { position: i as u64 + 1, hash, envelope: &envelope };
        if catalog_fact {
            catalog.apply(&fact);
        } else {
            tenant.apply(&fact);
        }
    }
    (catalog, tenant)
}

/// A fixed history from the sample events: the sample plan and add-on, a
/// subscription, a card-paid add-on, some tokens.
fn fixed() -> (CatalogState, TenantState) {
    use EventKind::*;
    let kinds = [
        PlanDefined,
        AddonDefined,
        Subscribed,
        AddonPurchased,
        PaymentSettled,
        AddonActivated,
        TokensConsumed,
    ];
    fold(kinds.into_iter().map(sample).collect())
}

#[test]
fn the_digests_of_a_fixed_invoice_are_pinned() {
    let (catalog, state) = fixed();
    let invoice = price_period(&state, &catalog, 0).unwrap().invoice;
    let v3 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V3);
    let v2 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V2);
    let v1 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V1);
    assert_eq!(invoice.inputs_digest, v3, "new invoices record v3");
    assert_eq!(hex(&v3), FIXED_V3);
    assert_eq!(hex(&v2), FIXED_V2);
    assert_eq!(hex(&v1), FIXED_V1);
    assert_eq!(debug_based_v1(&state, &catalog, 0).1, v1);
}

#[test]
fn the_v2_preimage_is_the_documented_layout() {
    // No plans, no add-ons: tag, varint position, hash, varint period, two
    // empty sequences.
    let mut state = TenantState::default();
    state.chain.last_position = 300;
    state.chain.last_hash = [0xab; 32];
    let catalog = CatalogState::default();
    let mut expected = INPUTS_TAG_V2.to_vec();
    expected.extend_from_slice(&[251, 0x2c, 0x01]);
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&[7, 0, 0]);
    assert_eq!(inputs_preimage(&state, &catalog, 7, DigestVersion::V2), expected);

    // A plan the catalog lacks is there, as its id and None.
    state.segments.push(Segment { start_us: 0, plan: "gone".into(), seats: 1, position: 1 });
    let mut expected = INPUTS_TAG_V2.to_vec();
    expected.extend_from_slice(&[251, 0x2c, 0x01]);
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&[7, 1, 4, b'g', b'o', b'n', b'e', 0, 0]);
    assert_eq!(inputs_preimage(&state, &catalog, 7, DigestVersion::V2), expected);

    // A plan it has: Some, then the PlanV1 fields in order.
    let (catalog, _) = fixed();
    state.segments[0].plan = "starter".into();
    let bytes = inputs_preimage(&state, &catalog, 7, DigestVersion::V2);
    let mut head = INPUTS_TAG_V2.to_vec();
    head.extend_from_slice(&[251, 0x2c, 0x01]);
    head.extend_from_slice(&[0xab; 32]);
    head.extend_from_slice(&[7, 1, 7]);
    head.extend_from_slice(b"starter");
    head.extend_from_slice(&[1, 7]);
    head.extend_from_slice(b"starter"); // the plan's own id
    head.extend_from_slice(&[1, 7]);
    head.extend_from_slice(b"Starter");
    head.extend_from_slice(&[3]);
    head.extend_from_slice(b"USD");
    head.extend_from_slice(&[5]);
    head.extend_from_slice(b"20.00");
    assert_eq!(bytes[..head.len()], head[..]);
    assert_eq!(*bytes.last().unwrap(), 0, "no add-ons");
}

#[test]
fn the_v3_preimage_is_v2_without_the_position() {
    let mut state = TenantState::default();
    state.chain.last_position = 300;
    state.chain.last_hash = [0xab; 32];
    let catalog = CatalogState::default();
    let mut expected = INPUTS_TAG_V3.to_vec();
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&[7, 0, 0]);
    assert_eq!(inputs_preimage(&state, &catalog, 7, DigestVersion::V3), expected);
    // The position is not an input: the log assigns it after the decision.
    let v3 = inputs_digest_versioned(&state, &catalog, 7, DigestVersion::V3);
    state.chain.last_position = 301;
    assert_eq!(inputs_digest_versioned(&state, &catalog, 7, DigestVersion::V3), v3);
    assert_ne!(
        inputs_digest_versioned(&state, &catalog, 7, DigestVersion::V2),
        {
            state.chain.last_position = 300;
            inputs_digest_versioned(&state, &catalog, 7, DigestVersion::V2)
        },
        "v2 covered it"
    );
}

#[test]
fn a_v2_digest_of_a_chained_decision_verifies_at_a_provisional_position_only() {
    // Before v3, a finalize decided in the same append as its tenant's
    // earlier events hashed the position its scratch state counted.
    let (catalog, state) = fixed();
    let derived = price_period(&state, &catalog, 0).unwrap().invoice;
    let mut scratch = state.clone();
    scratch.chain.last_position = 3;
    let mut recorded = derived.clone();
    recorded.inputs_digest = inputs_digest_versioned(&scratch, &catalog, 0, DigestVersion::V2);
    let check =
        |provisional: &[u64]| check_recorded_invoice(&recorded, &derived, &state, &catalog, 0, provisional);
    let chained = DigestMatch { version: DigestVersion::V2, provisional_position: Some(3) };
    assert_eq!(check(&[3]), Ok(chained));
    assert_eq!(check(&[5, 3]), Ok(chained));
    assert_eq!(check(&[]), Err(InvoiceMismatch::Digest));
    assert_eq!(check(&[2, 4]), Err(InvoiceMismatch::Digest));
    // The hash still binds the history: another chain is no match anywhere.
    let mut other = state.clone();
    other.chain.last_hash[0] ^= 1;
    assert_eq!(
        check_recorded_invoice(&recorded, &derived, &other, &catalog, 0, &[3]),
        Err(InvoiceMismatch::Digest)
    );
}

#[test]
fn a_missing_plan_or_addon_changes_the_digest() {
    let (catalog, mut state) = fixed();
    let before = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V2);
    // "pro" is not in this catalog.
    let mut changed = sample(EventKind::PlanChanged);
    changed.prev_hash = state.chain.last_hash;
    let last = state.chain;
    state.apply(&Fact { position: 99, hash: [1; 32], envelope: &changed });
    state.chain = last; // only the plan list differs
    let after = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V2);
    assert_ne!(before, after);
    let text = inputs_preimage(&state, &catalog, 0, DigestVersion::V1);
    // Sorted ids: "pro" (missing) before "starter".
    assert!(String::from_utf8_lossy(&text[44..]).starts_with("NoneSome(PlanV1 { id: \"starter\""));
    assert_eq!(debug_based_v1(&state, &catalog, 0).0, text);
}

fn plan(id: &str) -> PlanV1 {
    PlanV1 {
        id: id.into(),
        name: None,
        currency: "EUR".into(),
        price: dec("0"),
        per_seat: true,
        min_seats: 0,
        max_seats: None,
        storage_quota_gb: dec("0.5"),
        monthly_token_limit: u64::MAX,
        token_overage: TokenOverageV1::Block,
        addons: vec![],
    }
}

fn addon(id: &str) -> AddonV1 {
    AddonV1 {
        id: id.into(),
        name: None,
        currency: "JPY".into(),
        price: dec("100"),
        recurring: false,
        grants: GrantsV1 { storage_gb: None, tokens: None, feature: None },
    }
}

/// Plans and add-ons covering every shape v1 prints: names absent and with
/// characters `{:?}` escapes, both overage kinds, grants with and without
/// fields, odd decimals, and ids the catalog lacks.
fn varied() -> (CatalogState, TenantState) {
    let mut catalog = fixed().0;
    let plans = vec![
        plan("a-plain"),
        PlanV1 {
            name: Some("Quote \" back\\slash\ttab\nnewline \u{1} \u{7f} é ü 🦀 \u{301}".into()),
            price: dec("-1.50"),
            per_seat: false,
            min_seats: 3,
            max_seats: Some(u32::MAX),
            storage_quota_gb: Decimal::MAX,
            monthly_token_limit: 0,
            token_overage: TokenOverageV1::BillPer1k { price: Decimal::new(1, 28) },
            addons: vec!["x".into(), "with \"quotes\"".into(), String::new()],
            ..plan("b-full")
        },
        PlanV1 {
            name: Some(String::new()),
            price: Decimal::MIN,
            max_seats: Some(0),
            token_overage: TokenOverageV1::BillPer1k { price: dec("0.000") },
            addons: vec!["only".into()],
            ..plan("c-\u{301}odd id'")
        },
    ];
    for p in plans {
        catalog.plans.insert(p.id.clone(), p);
    }
    let addons = vec![
        addon("a-bare"),
        AddonV1 {
            name: Some("Name with \\ and \"".into()),
            recurring: true,
            grants: GrantsV1 {
                storage_gb: Some(dec("1.25")),
                tokens: Some(u64::MAX),
                feature: Some("sso\r\n".into()),
            },
            ..addon("b-all-grants")
        },
        AddonV1 {
            grants: GrantsV1 { storage_gb: None, tokens: Some(0), feature: Some(String::new()) },
            price: dec("-0"),
            ..addon("c-some-grants")
        },
    ];
    for a in addons {
        catalog.addons.insert(a.id.clone(), a);
    }

    let mut state = fold([EventKind::Subscribed].into_iter().map(sample).collect()).1;
    for (i, id) in
        ["c-\u{301}odd id'", "a-plain", "not-defined", "b-full", "starter", "a-plain"].iter().enumerate()
    {
        state.segments.push(Segment {
            start_us: i as i64,
            plan: id.to_string(),
            seats: 1,
            position: 10 + i as u64,
        });
    }
    for (i, id) in ["b-all-grants", "missing-addon", "a-bare", "extra-storage", "c-some-grants", "a-bare"]
        .iter()
        .enumerate()
    {
        state.purchases.insert(
            format!("p-{i}"),
            Purchase {
                addon: id.to_string(),
                quantity: 1,
                payment: Payment::Invoice,
                status: PurchaseStatus::Active,
                purchased_at_us: 0,
                activated_at_us: None,
                ended_at_us: None,
                paid_by_card: false,
                reference: None,
                position: 20 + i as u64,
            },
        );
    }
    (catalog, state)
}

#[test]
fn hand_written_v1_is_the_text_debug_gave() {
    let (catalog, state) = varied();
    for k in [0, 1, u32::MAX] {
        let (expected, digest) = debug_based_v1(&state, &catalog, k);
        let bytes = inputs_preimage(&state, &catalog, k, DigestVersion::V1);
        assert_eq!(String::from_utf8_lossy(&bytes[44..]), String::from_utf8_lossy(&expected[44..]));
        assert_eq!(bytes, expected);
        assert_eq!(inputs_digest_versioned(&state, &catalog, k, DigestVersion::V1), digest);
    }
    // Each sample definition alone, too.
    let (catalog, _) = fixed();
    for (plan, addon) in [("starter", "extra-storage"), ("nope", "nope")] {
        let mut state = TenantState::default();
        state.segments.push(Segment { start_us: 0, plan: plan.into(), seats: 1, position: 1 });
        state.purchases.insert(
            "p".into(),
            Purchase {
                addon: addon.into(),
                quantity: 1,
                payment: Payment::Card,
                status: PurchaseStatus::Pending,
                purchased_at_us: 0,
                activated_at_us: None,
                ended_at_us: None,
                paid_by_card: false,
                reference: None,
                position: 2,
            },
        );
        assert_eq!(
            inputs_preimage(&state, &catalog, 0, DigestVersion::V1),
            debug_based_v1(&state, &catalog, 0).0
        );
    }
}

#[test]
fn verification_accepts_any_version_and_nothing_else() {
    let (catalog, state) = varied();
    let v1 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V1);
    let v2 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V2);
    let v3 = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V3);
    assert_ne!(v1, v2);
    assert_ne!(v2, v3);
    assert_eq!(recorded_digest_version(&v1, &state, &catalog, 0), Some(DigestVersion::V1));
    assert_eq!(recorded_digest_version(&v2, &state, &catalog, 0), Some(DigestVersion::V2));
    assert_eq!(recorded_digest_version(&v3, &state, &catalog, 0), Some(DigestVersion::V3));
    assert!(digest_verifies(&v1, &state, &catalog, 0));
    assert!(!digest_verifies(&v1, &state, &catalog, 1), "another period");
    assert!(!digest_verifies(&[0; 32], &state, &catalog, 0));
    // Another definition of a used plan is another digest, in both versions.
    let mut other = catalog.clone();
    other.plans.get_mut("a-plain").unwrap().min_seats = 1;
    assert!(!digest_verifies(&v1, &state, &other, 0));
    assert!(!digest_verifies(&v2, &state, &other, 0));
    assert!(!digest_verifies(&v3, &state, &other, 0));
}

#[test]
fn a_recorded_invoice_is_checked_by_value_and_by_any_digest_version() {
    let (catalog, state) = fixed();
    let derived = price_period(&state, &catalog, 0).unwrap().invoice;
    let check =
        |recorded: &events::Invoice| check_recorded_invoice(recorded, &derived, &state, &catalog, 0, &[]);
    let plain = |version| Ok(DigestMatch { version, provisional_position: None });
    assert_eq!(check(&derived), plain(DigestVersion::V3));

    let mut v2 = derived.clone();
    v2.inputs_digest = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V2);
    assert_eq!(check(&v2), plain(DigestVersion::V2), "invoices recorded before v3 still verify");

    let mut old = derived.clone();
    old.inputs_digest = inputs_digest_versioned(&state, &catalog, 0, DigestVersion::V1);
    assert_eq!(check(&old), plain(DigestVersion::V1), "invoices recorded before v2 still verify");

    let mut forged = derived.clone();
    forged.inputs_digest[0] ^= 1;
    assert_eq!(check(&forged), Err(InvoiceMismatch::Digest));

    let mut charged = derived.clone();
    charged.lines[0].amount += dec("0.01");
    assert_eq!(check(&charged), Err(InvoiceMismatch::Charges));
    let mut charged = derived.clone();
    charged.currency = "EUR".into();
    assert!(!same_charges(&charged, &derived));

    // Bit for bit: the same amount at another scale is another record.
    let mut rescaled = derived.clone();
    rescaled.total.rescale(derived.total.scale() + 1);
    assert_eq!(rescaled.total, derived.total);
    assert_eq!(check(&rescaled), Err(InvoiceMismatch::Charges));
}

#[test]
fn v1_text_of_the_samples_is_the_documented_one() {
    // docs/audit-format.md shows these two definitions.
    let (catalog, mut state) = fixed();
    state.segments.truncate(1);
    let bytes = inputs_preimage(&state, &catalog, 0, DigestVersion::V1);
    let text = concat!(
        r#"Some(PlanV1 { id: "starter", name: Some("Starter"), currency: "USD", price: 20.00, per_seat: false, "#,
        r#"min_seats: 1, max_seats: Some(50), storage_quota_gb: 2, monthly_token_limit: 10000, "#,
        r#"token_overage: BillPer1k { price: 0.02 }, addons: ["extra-storage"] })"#,
        r#"Some(AddonV1 { id: "extra-storage", name: None, currency: "USD", price: 3.00, recurring: true, "#,
        r#"grants: GrantsV1 { storage_gb: Some(5), tokens: Some(1000), feature: None } })"#,
    );
    assert_eq!(std::str::from_utf8(&bytes[44..]).unwrap(), text);
}
