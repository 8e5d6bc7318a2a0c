//! Invoices, data-driven: each case is `apply` input plus amounts computed
//! by hand, checked through the real engine on the embedded log.

use ledger::apply::apply_lines;
use ledger::engine::Ledger;
use ledger::store::{open_log, open_views};

const CATALOG: &str = r#"{"at":"2020-01-01T00:00:00Z","cmd":"define_addon","addon":{"id":"storage","currency":"USD","price":"3.10","recurring":true,"grants":{"storage_gb":"5"}}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_addon","addon":{"id":"pack","currency":"USD","price":"10.00","recurring":false,"grants":{"tokens":50000}}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"flat","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["storage","pack"]}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"pro","currency":"USD","price":"30.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["storage"]}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"seat","currency":"USD","price":"8.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":100000,"token_overage":{"bill_per_1k":"0.02"},"addons":["pack"]}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"seat10","currency":"USD","price":"10.00","per_seat":true,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"nickel","currency":"USD","price":"0.05","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}
{"at":"2020-01-01T00:00:00Z","cmd":"define_plan","plan":{"id":"yen","currency":"JPY","price":"1001","per_seat":false,"storage_quota_gb":"1","monthly_token_limit":1,"token_overage":"block","addons":[]}}"#;

struct Case {
    name: &'static str,
    commands: &'static str,
    /// Instant whose period to price.
    at: &'static str,
    status: &'static str,
    /// (code, amount, paid)
    lines: &'static [(&'static str, &'static str, bool)],
    total: &'static str,
    amount_due: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "seat change mid-period: 8.00 x (5 x 15 + 8 x 16) seat-days / 31",
        commands: r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"seat","seats":5}
{"at":"2026-03-16T00:00:00Z","actor":"t:admin","cmd":"set_seats","tenant":"t","seats":8}"#,
        at: "2026-03-20T00:00:00Z",
        status: "draft",
        lines: &[("plan:seat", "52.39", false)],
        total: "52.39",
        amount_due: "52.39",
    },
    Case {
        name: "plan change mid-period: flat 20 x 10/31 + pro 30 x 21/31",
        commands: r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"flat","seats":1}
{"at":"2026-03-11T00:00:00Z","cmd":"change_plan","tenant":"t","plan":"pro"}
{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"t"}"#,
        at: "2026-03-05T00:00:00Z",
        status: "final",
        lines: &[("plan:flat", "6.45", false), ("plan:pro", "20.32", false)],
        total: "26.77",
        amount_due: "26.77",
    },
    Case {
        name: "cancel mid-period: 8.00 x 3 seats x 21.5/31, card-paid one-off",
        commands: r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"seat","seats":3}
{"at":"2026-03-05T00:00:00Z","cmd":"purchase_addon","tenant":"t","addon":"pack","purchase":"p1","payment":"card"}
{"at":"2026-03-05T00:01:00Z","cmd":"settle_payment","tenant":"t","purchase":"p1","outcome":"paid"}
{"at":"2026-03-22T12:00:00Z","cmd":"cancel","tenant":"t"}"#,
        at: "2026-03-10T00:00:00Z",
        status: "final",
        lines: &[("plan:seat", "16.65", false), ("addon:p1", "10.00", true)],
        total: "26.65",
        amount_due: "16.65",
    },
    Case {
        name: "Jan 31 anchor: period 1 runs Feb 28 - Mar 31; add-on from Mar 10 is 3.10 x 21/31",
        commands: r#"{"at":"2026-01-31T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"flat","seats":1}
{"at":"2026-03-10T00:00:00Z","cmd":"purchase_addon","tenant":"t","addon":"storage","purchase":"s","payment":"invoice"}"#,
        at: "2026-03-30T00:00:00Z",
        status: "draft",
        lines: &[("plan:flat", "20.00", false), ("addon:s", "2.10", false)],
        total: "22.10",
        amount_due: "22.10",
    },
    Case {
        name: "leap February: 10.00 x (1 x 14 + 2 x 15) seat-days / 29",
        commands: r#"{"at":"2028-02-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"seat10","seats":1}
{"at":"2028-02-15T00:00:00Z","cmd":"set_seats","tenant":"t","seats":2}"#,
        at: "2028-02-29T12:00:00Z",
        status: "draft",
        lines: &[("plan:seat10", "15.17", false)],
        total: "15.17",
        amount_due: "15.17",
    },
    Case {
        name: "half-cent midpoint: 0.05 x 15/30 = 0.025 rounds away from zero",
        commands: r#"{"at":"2026-04-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"nickel","seats":1}
{"at":"2026-04-16T00:00:00Z","cmd":"cancel","tenant":"t"}"#,
        at: "2026-04-02T00:00:00Z",
        status: "final",
        lines: &[("plan:nickel", "0.03", false)],
        total: "0.03",
        amount_due: "0.03",
    },
    Case {
        name: "zero-decimal currency: 1001 JPY x 15/30 = 500.5 -> 501",
        commands: r#"{"at":"2026-04-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"yen","seats":1}
{"at":"2026-04-16T00:00:00Z","cmd":"cancel","tenant":"t"}"#,
        at: "2026-04-02T00:00:00Z",
        status: "final",
        lines: &[("plan:yen", "501", false)],
        total: "501",
        amount_due: "501",
    },
    Case {
        name: "token overage: (165500 - (100000 + 50000)) x 0.02 / 1000, one-off pack counted in its period",
        commands: r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"seat","seats":2}
{"at":"2026-03-02T00:00:00Z","cmd":"purchase_addon","tenant":"t","addon":"pack","purchase":"p","payment":"invoice"}
{"at":"2026-03-03T00:00:00Z","actor":"t:user","cmd":"consume_tokens","tenant":"t","request":"a","tokens":120000}
{"at":"2026-03-04T00:00:00Z","actor":"t:user","cmd":"consume_tokens","tenant":"t","request":"b","tokens":45500}
{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"t"}"#,
        at: "2026-03-04T00:00:00Z",
        status: "final",
        lines: &[
            ("plan:seat", "16.00", false),
            ("addon:p", "10.00", false),
            ("tokens:overage", "0.31", false),
        ],
        total: "26.31",
        amount_due: "26.31",
    },
    Case {
        name: "next period starts at zero: April draft has no overage and no one-off",
        commands: r#"{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"t","plan":"seat","seats":2}
{"at":"2026-03-03T00:00:00Z","actor":"t:user","cmd":"consume_tokens","tenant":"t","request":"a","tokens":250000}
{"at":"2026-04-03T00:00:00Z","actor":"t:user","cmd":"consume_tokens","tenant":"t","request":"b","tokens":10}"#,
        at: "2026-04-03T00:00:00Z",
        status: "draft",
        lines: &[("plan:seat", "16.00", false)],
        total: "16.00",
        amount_due: "16.00",
    },
];

async fn run(case: &Case) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), None, 1).await.unwrap();
    let views = open_views(dir.path(), &log).unwrap();
    let ledger = Ledger::start(log, views.clone()).await.unwrap();
    let lines: Vec<String> = CATALOG.lines().chain(case.commands.lines()).map(str::to_string).collect();
    let (results, malformed) = apply_lines(&ledger, &lines, ledger::apply::Future::Allow).await.unwrap();
    assert!(!malformed);
    for r in &results {
        assert_eq!(r["ok"], true, "{}: {r}", case.name);
    }
    let at = ledger::command::parse_at(case.at).unwrap();
    ledger::report::invoice(&views, "t", Some(at)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_computed_invoices() {
    for case in CASES {
        let invoice = run(case).await;
        let lines: Vec<(String, String, bool)> = invoice["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["code"].as_str().unwrap().into(),
                    l["amount"].as_str().unwrap().into(),
                    l["paid"].as_bool().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, String, bool)> =
            case.lines.iter().map(|(c, a, p)| (c.to_string(), a.to_string(), *p)).collect();
        assert_eq!(lines, expected, "{}", case.name);
        assert_eq!(invoice["status"], case.status, "{}", case.name);
        assert_eq!(invoice["total"], case.total, "{}", case.name);
        assert_eq!(invoice["amount_due"], case.amount_due, "{}", case.name);
    }
}
