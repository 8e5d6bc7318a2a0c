//! The HTTP contract checked from the other side, by outside tools:
//! schemathesis drives a real `ledger serve --http` from the document it
//! serves (`scripts/contract`, once per kind of key), and the official
//! CloudEvents SDK for Python sends usage in binary, structured and batched
//! mode. Both come pinned from `scripts/contract-tools` (`scripts/test`
//! sets LEDGER_CONTRACT_TOOLS). And the document's patterns are held to
//! the parser's rules, so the schema and the server agree on every string.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use common::http::{add_key, Http, HttpServe};
use ledger::command::{parse_at, parse_line, valid_command_id};
use proptest::prelude::*;
use regex::Regex;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The bin directory of the contract's tools.
fn tools() -> PathBuf {
    std::env::var_os("LEDGER_CONTRACT_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        let installed = root().join(".tools/contract/bin");
        assert!(
            installed.exists(),
            "the contract's tools are missing: run scripts/test (or scripts/contract-tools)"
        );
        installed
    })
}

/// Runs held to one at a time: each keeps both cores busy.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// `scripts/contract KIND`: schemathesis, every phase and check, finds
/// nothing.
fn schemathesis_finds_nothing(kind: &str) {
    let _one = ONE_RUN.lock().unwrap_or_else(PoisonError::into_inner);
    let out = Command::new(root().join("scripts/contract"))
        .arg(kind)
        .env("LEDGER_BIN", env!("CARGO_BIN_EXE_ledger"))
        .env("LEDGER_CONTRACT_TOOLS", tools())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found something with the {kind} key:\n{stdout}\n{stderr}");
    // It ran: every phase, and requests that reached the server.
    for phase in ["Coverage", "Fuzzing"] {
        assert!(stdout.contains(&format!("✅ {phase}")), "{phase} did not pass:\n{stdout}");
    }
    assert!(stdout.contains(" passed") && !stdout.contains(" failed"), "{stdout}");
}

#[test]
fn schemathesis_finds_nothing_with_a_tenant_user_key() {
    schemathesis_finds_nothing("user");
}

#[test]
fn schemathesis_finds_nothing_with_a_tenant_admin_key() {
    schemathesis_finds_nothing("admin");
}

#[test]
fn schemathesis_finds_nothing_with_the_panel_key() {
    schemathesis_finds_nothing("panel");
}

/// What the official SDK sends, unchanged, is understood in every mode:
/// the events are recorded once each (a resend is a duplicate), with the
/// ids the SDK percent-encoded decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_cloudevents_sdk_is_understood_in_every_mode() {
    let data = tempfile::tempdir().unwrap();
    let seed = root().join("tests/contract/seed.jsonl");
    let applied = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--data")
        .arg(data.path())
        .arg("apply")
        .arg(seed)
        .output();
    assert!(applied.unwrap().status.success());
    let key = add_key(data.path(), &["acme", "user"]);
    let serve = HttpServe::spawn(data.path(), None);
    let http = Http::new(&serve.base);
    let before = http.get("/v1/tenants/acme/usage", Some(&key)).await.body;

    let out = Command::new(tools().join("python"))
        .arg(root().join("tests/contract/cloudevents_sdk.py"))
        .env("BASE", &serve.base)
        .env("KEY", &key)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK's events were not understood:\n{stdout}\n{stderr}");
    let sent: Value = serde_json::from_str(stdout.trim()).unwrap();

    let after = http.get("/v1/tenants/acme/usage", Some(&key)).await.body;
    let grew = |figure: &str, field: &str| {
        after[figure][field].as_u64().unwrap() - before[figure][field].as_u64().unwrap()
    };
    assert_eq!(grew("tokens", "used"), sent["tokens"].as_u64().unwrap(), "{after}");
    assert_eq!(grew("storage", "used_bytes"), sent["bytes"].as_u64().unwrap(), "{after}");
    // The file id arrived percent-decoded: deleting it by that id frees it.
    let delete = serde_json::json!({"file": "sdk-\"q\"%2"});
    let deleted = http.post("/v1/tenants/acme/delete_file", Some(&key), &delete).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
}

/// A property of the document, not of a case: every string its patterns
/// admit the parser accepts, and (where the bound is a pattern's to say)
/// every string they refuse the parser refuses.
#[test]
fn the_documents_patterns_are_the_parsers_rules() {
    let doc = ledger::serve::http::openapi::openapi();
    let schemas = &doc["components"]["schemas"];
    let plan = &schemas["Plan"]["properties"];
    let pattern = |schema: &Value| Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    let (decimal, id, tenant) =
        (pattern(&plan["price"]), pattern(&plan["id"]), pattern(&schemas["Usage"]["properties"]["tenant"]));
    let instant = pattern(&schemas["ConsumeTokens"]["properties"]["admitted_offline_at"]);
    let name = &plan["name"];
    let (name_pattern, ascii) = (pattern(name), pattern(&name["anyOf"][2]));
    let name_short = name["anyOf"][1]["maxLength"].as_u64().unwrap() as usize;

    let price_accepted = |price: &str| {
        let line = serde_json::json!({"cmd": "define_plan", "plan": {"id": "p", "currency": "USD", "price": price, "per_seat": false, "storage_quota_gb": "1", "monthly_token_limit": 1, "token_overage": "block", "addons": []}});
        parse_line(&line.to_string()).is_ok()
    };
    let name_accepted = |name: &str| {
        let line = serde_json::json!({"cmd": "define_addon", "addon": {"id": "a", "name": name, "currency": "USD", "price": "1", "recurring": true, "grants": {}}});
        parse_line(&line.to_string()).is_ok()
    };
    let config = ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(
        text in "[0-9.+eE -]{0,30}",
        digits in proptest::string::string_regex(decimal.as_str().trim_start_matches('^').trim_end_matches('$')).unwrap(),
        some_id in "[ -~\u{e9}]{0,130}",
        some_tenant in "[a-z0-9A-Z_.-]{0,65}",
        year in 0u32..10000,
        some_name in "(\\PC|\\p{Cc}){0,300}",
    )| {
        prop_assert_eq!(decimal.is_match(&text), price_accepted(&text), "price {:?}", text);
        prop_assert!(price_accepted(&digits), "price {:?}", digits);
        prop_assert_eq!(id.is_match(&some_id) && (1..=128).contains(&some_id.len()), valid_command_id(&some_id));
        prop_assert_eq!(tenant.is_match(&some_tenant), events::valid_tenant_id(&some_tenant), "{:?}", some_tenant);
        let at = format!("{year:04}-06-30T12:00:00+01:00");
        prop_assert_eq!(instant.is_match(&at), parse_at(&at).is_ok(), "{}", at);
        // A name: 256 bytes no schema can count, so the document admits
        // only names that surely fit, and never one the parser refuses.
        let admitted = name_pattern.is_match(&some_name)
            && some_name.chars().count() <= 256
            && (some_name.chars().count() <= name_short || ascii.is_match(&some_name));
        prop_assert!(!admitted || name_accepted(&some_name), "name {:?}", some_name);
        if !name_pattern.is_match(&some_name) || some_name.len() > 256 {
            prop_assert!(!name_accepted(&some_name), "name {:?}", some_name);
        }
    });
}

/// The webhook routes' patterns are the server's rules too: a URL the
/// document admits is one the ledger takes (and can take apart), and one
/// it refuses the ledger refuses; the same for a retry delay.
#[test]
fn the_webhook_patterns_are_the_rules_the_ledger_applies() {
    use ledger::notify::{admin, egress};
    let url = Regex::new(egress::URL_PATTERN).unwrap();
    let delay = Regex::new(admin::DELAY_PATTERN).unwrap();
    let unanchored = |pattern: &str| pattern.trim_start_matches('^').trim_end_matches('$').to_string();
    let config = ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(
        near_url in "(https?|ftp|HTTP)://(\\[[0-9a-fA-F:.z]{0,8}\\]|[A-Za-z0-9.@_-]{0,12})(:[0-9]{0,6})?(/[ -~]{0,16})?",
        valid_url in proptest::string::string_regex(&unanchored(egress::URL_PATTERN)).unwrap(),
        near_delay in " ?0{0,3}[0-9]{0,10}(ms|s|m|h|d|x|)",
        valid_delay in proptest::string::string_regex(&unanchored(admin::DELAY_PATTERN)).unwrap(),
    )| {
        for candidate in [&near_url, &valid_url] {
            let admitted = url.is_match(candidate) && candidate.len() <= egress::MAX_URL_BYTES;
            prop_assert_eq!(admitted, egress::well_formed(candidate), "{:?}", candidate);
            prop_assert_eq!(admitted, egress::parse(candidate).is_ok(), "{:?}", candidate);
        }
        prop_assert!(url.is_match(&valid_url), "{:?}", valid_url);
        for candidate in [&near_delay, &valid_delay] {
            prop_assert_eq!(delay.is_match(candidate), admin::parse_delay(candidate).is_ok(), "{:?}", candidate);
        }
        prop_assert!(delay.is_match(&valid_delay), "{:?}", valid_delay);
    });
    // The edges, by hand.
    for (text, taken) in [
        ("604800s", true),
        ("604801s", false),
        ("7d", true),
        ("8d", false),
        ("168h", true),
        ("169h", false),
        ("10080m", true),
        ("10081m", false),
        ("604800000", true),
        ("604800001ms", false),
        ("0005s", true),
        ("5 s", false),
    ] {
        assert_eq!(delay.is_match(text), taken, "{text}");
        assert_eq!(admin::parse_delay(text).is_ok(), taken, "{text}");
    }
    for (text, taken) in [
        ("http://127.0.0.1:65535/x?y=1", true),
        ("http://127.0.0.1:65536/", false),
        ("https://[::1]:8080/", true),
        ("http://a?x", false),
        ("http://u@a/", false),
        ("http://a/#f", false),
        ("http://a:08080/", false),
        ("http://a:0080/", true),
    ] {
        assert_eq!(url.is_match(text), taken, "{text}");
        assert_eq!(egress::parse(text).is_ok(), taken, "{text}");
    }
}
