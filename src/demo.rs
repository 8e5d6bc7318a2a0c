//! `ledger demo`: a realistic multi-tenant month recorded into a fresh
//! ledger (the data directory's embedded log, or the JetStream stream with
//! `--nats`) through the same `apply` path the command line uses, so the
//! commands after it (`usage`, `invoice`, `audit verify`, `serve`) answer
//! about its tenants.

use std::path::Path;

use crate::apply::{apply_lines, Future};
use crate::engine::Ledger;
use crate::log::Source;
use crate::report;
use crate::store::{open_log, open_views};

/// The data directory when `--data` is not given.
pub const DEFAULT_DATA: &str = "./ledger-data";

/// The scenario, as `ledger apply` input. Three tenants over March 2026:
/// the spec's worked example (`demo`), a per-seat team that changes seats,
/// pays a token pack by card and runs into overage (`acme`), and one whose
/// card fails and who cancels mid-period (`globex`); plus one rejection or
/// denial of each common kind.
pub const SCENARIO: &str = r#"{"at":"2026-02-01T00:00:00Z","cmd":"define_addon","addon":{"id":"extra-storage","name":"Extra storage 5 GB","currency":"USD","price":"3.00","recurring":true,"grants":{"storage_gb":"5"}}}
{"at":"2026-02-01T00:00:00Z","cmd":"define_addon","addon":{"id":"token-pack","name":"50k token pack","currency":"USD","price":"10.00","recurring":false,"grants":{"tokens":50000}}}
{"at":"2026-02-01T00:00:00Z","cmd":"define_plan","plan":{"id":"starter","name":"Starter","currency":"USD","price":"20.00","per_seat":false,"storage_quota_gb":"2","monthly_token_limit":10000,"token_overage":"block","addons":["extra-storage"]}}
{"at":"2026-02-01T00:00:00Z","cmd":"define_plan","plan":{"id":"team","name":"Team (per seat)","currency":"USD","price":"8.00","per_seat":true,"min_seats":2,"max_seats":50,"storage_quota_gb":"10","monthly_token_limit":100000,"token_overage":{"bill_per_1k":"0.02"},"addons":["extra-storage","token-pack"]}}
{"at":"2026-02-01T00:00:00Z","cmd":"define_plan","plan":{"id":"team-eu","name":"Team EU","currency":"EUR","price":"7.50","per_seat":true,"storage_quota_gb":"10","monthly_token_limit":100000,"token_overage":"block","addons":[]}}
{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"demo","plan":"starter","seats":2}
{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"acme","plan":"team","seats":5}
{"at":"2026-03-01T00:00:00Z","cmd":"subscribe","tenant":"globex","plan":"team","seats":3}
{"at":"2026-03-02T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"a","tokens":6000}
{"at":"2026-03-03T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"b","tokens":5000}
{"at":"2026-03-03T00:00:00Z","actor":"demo:user","cmd":"consume_tokens","tenant":"demo","request":"a","tokens":6000}
{"at":"2026-03-04T00:00:00Z","actor":"demo:user","cmd":"upload","tenant":"demo","file":"backup.tar","bytes":1610612736}
{"at":"2026-03-05T00:00:00Z","actor":"demo:user","cmd":"upload","tenant":"demo","file":"video.mp4","bytes":1073741824}
{"at":"2026-03-05T00:00:00Z","actor":"demo:user","cmd":"set_seats","tenant":"demo","seats":3}
{"at":"2026-03-11T00:00:00Z","actor":"demo:admin","cmd":"purchase_addon","tenant":"demo","addon":"extra-storage","purchase":"x1","payment":"invoice"}
{"at":"2026-03-11T00:00:01Z","actor":"demo:user","cmd":"upload","tenant":"demo","file":"video.mp4","bytes":1073741824}
{"at":"2026-03-16T00:00:00Z","actor":"acme:admin","cmd":"set_seats","tenant":"acme","seats":8}
{"at":"2026-03-16T00:00:00Z","actor":"acme:admin","cmd":"set_seats","tenant":"acme","seats":80}
{"at":"2026-03-17T00:00:00Z","cmd":"change_plan","tenant":"acme","plan":"team-eu"}
{"at":"2026-03-18T00:00:00Z","actor":"acme:admin","cmd":"purchase_addon","tenant":"acme","addon":"token-pack","purchase":"tp-1","payment":"card"}
{"at":"2026-03-18T00:05:00Z","cmd":"settle_payment","tenant":"acme","purchase":"tp-1","outcome":"paid","reference":"ch_3PqX"}
{"at":"2026-03-20T00:00:00Z","actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"r-1","tokens":120000}
{"at":"2026-03-21T00:00:00Z","actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"r-2","tokens":45500}
{"at":"2026-03-21T00:00:00Z","actor":"acme:user","cmd":"upload","tenant":"acme","file":"design/specs.pdf","bytes":52428800}
{"at":"2026-03-21T00:00:00Z","actor":"globex:admin","cmd":"purchase_addon","tenant":"globex","addon":"token-pack","purchase":"tp-9","payment":"card"}
{"at":"2026-03-21T00:10:00Z","cmd":"settle_payment","tenant":"globex","purchase":"tp-9","outcome":"failed","reference":"declined"}
{"at":"2026-03-21T00:11:00Z","actor":"globex:user","cmd":"consume_tokens","tenant":"acme","request":"sneaky","tokens":1}
{"at":"2026-03-22T12:00:00Z","cmd":"cancel","tenant":"globex"}
{"at":"2026-03-23T00:00:00Z","actor":"globex:user","cmd":"consume_tokens","tenant":"globex","request":"late","tokens":10}
{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"demo"}
{"at":"2026-04-01T00:00:00Z","cmd":"close_period","tenant":"acme"}
{"at":"2026-04-02T00:00:00Z","actor":"acme:user","cmd":"consume_tokens","tenant":"acme","request":"r-3","tokens":1000}
"#;

pub async fn run(data: &Path, nats: Option<&str>, replicas: usize) -> anyhow::Result<()> {
    let log = open_log(data, nats, replicas).await?;
    let where_ = crate::store::describe(data, nats);
    let head = log.head().await?;
    anyhow::ensure!(
        head == 0,
        "{where_} already holds a ledger ({head} events): the demo records into a fresh one. \
         Pass another --data directory{}",
        if nats.is_some() { " and a fresh stream" } else { ", or delete this one" }
    );
    let views = open_views(data, &log)?;
    let ledger = Ledger::start(log, views.clone()).await?;
    let lines: Vec<String> = SCENARIO.lines().map(str::to_string).collect();
    println!("== applying {} commands to a fresh ledger in {where_}", lines.len());
    let (results, _) = apply_lines(&ledger, &lines, Future::Allow).await?;
    for (line, result) in lines.iter().zip(&results) {
        let command: serde_json::Value = serde_json::from_str(line)?;
        let what = format!(
            "{} {} {}",
            command["at"].as_str().unwrap_or(""),
            command["actor"].as_str().unwrap_or("admin"),
            command["cmd"].as_str().unwrap_or("")
        );
        let outcome = if result["ok"] == true {
            format!(
                "ok seq {}{}",
                result["seq"],
                if result["duplicate"] == true { " (duplicate)" } else { "" }
            )
        } else {
            format!("{}: {}", result["code"].as_str().unwrap_or(""), result["message"].as_str().unwrap_or(""))
        };
        println!("  {what:<52} {outcome}");
    }
    for tenant in ["demo", "acme", "globex"] {
        println!("\n== {tenant}");
        print!("{}", report::usage_table(&report::usage(&views, tenant, None)?));
        let march = crate::engine::command::parse_at("2026-03-15T00:00:00Z").expect("fixed instant");
        print!("{}", report::invoice_table(&report::invoice(&views, tenant, Some(march))?));
    }
    ledger.shutdown().await;
    views.flush().await?;
    let mut data_option =
        if data == Path::new(DEFAULT_DATA) { String::new() } else { format!(" --data {}", data.display()) };
    if nats.is_some() {
        data_option.push_str(" --nats URL");
    }
    println!(
        "\nThe ledger is in {where_}; ask it, for example:\n  ledger{data_option} usage acme\n  ledger{data_option} invoice acme --at 2026-03-15T00:00:00Z --explain\n  ledger{data_option} audit verify"
    );
    Ok(())
}
