//! The README is one walk that works when typed in order on a fresh clone:
//! set up (the demo), use, audit, serve (seeded, with the Python examples
//! answering as printed: NATS, and the Python client over HTTP).
//! `the_readme_walks` runs its shell blocks and its Python blocks
//! themselves, in a scratch directory that holds what a clone holds
//! (`scripts/`, `docs/`, `examples/`), with the built `ledger` on PATH and
//! the Python of `scripts/python-client` (which installed
//! `clients/python`, as the README's `pip install ./clients/python` does).
//! Three things are adapted, and only these: the ports (random ones, not
//! 4222 and 8080, since tests run side by side), the set-up commands (the
//! demo runs through the built binary; `scripts/test` is this very suite),
//! and `serve` gets `--webhook-allow-hosts 127.0.0.1` (tests reach only
//! loopback).
//!
//! The other tests pin the new-user problems the walk met (issue 11).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's runnable blocks in order: `(language, text)`, where an
/// indented block is `sh` and a fenced one carries its language.
fn blocks(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(language) = line.strip_prefix("```") {
            let mut text = String::new();
            for line in lines.by_ref() {
                if line.starts_with("```") {
                    break;
                }
                text.push_str(line);
                text.push('\n');
            }
            out.push((language.to_string(), text));
        } else if line.starts_with("    ") && !line.trim().is_empty() {
            let mut text = format!("{}\n", &line[4..]);
            while let Some(next) = lines.peek() {
                if !next.starts_with("    ") {
                    break;
                }
                text.push_str(&next[4..]);
                text.push('\n');
                lines.next();
            }
            out.push(("sh".to_string(), text));
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn python_path() -> String {
    std::env::var("LEDGER_PYTHONPATH")
        .unwrap_or_else(|_| repo().join(".tools/pylib").to_string_lossy().into_owned())
}

/// The Python that runs the README's Python blocks: the Python client's
/// environment (`scripts/python-client`: `ledger_client`, installed from
/// `clients/python`, and nats-py), as a reader who ran `pip install
/// ./clients/python` has.
fn python() -> String {
    let tools = std::env::var("LEDGER_PYTHON_CLIENT_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".tools/python-client/bin"));
    let python = tools.join("python");
    assert!(python.exists(), "no {}: run scripts/test (or scripts/python-client)", python.display());
    python.to_string_lossy().into_owned()
}

/// `dir/bin/nats-server` and `dir/bin/ledger`, so the walk's commands find
/// what `scripts/test` provides.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ledger"), bin.join("ledger")).unwrap();
    bin
}

#[test]
fn the_readme_walks() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let port = free_port();
    let http_port = free_port();
    let walk = tempfile::tempdir().unwrap();
    let dir = walk.path();
    for part in ["scripts", "examples"] {
        std::os::unix::fs::symlink(repo().join(part), dir.join(part)).unwrap();
    }
    // docs/ is copied, its server configuration on the walk's port.
    std::fs::create_dir(dir.join("docs")).unwrap();
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            std::fs::write(
                dir.join("docs").join(path.file_name().unwrap()),
                text.replace(":4222", &format!(":{port}")).replace(":8080", &format!(":{http_port}")),
            )
            .unwrap();
        }
    }
    let bin = bin_dir(dir);
    let nats_server = ledger::bench::natsd::binary().expect("scripts/test provides nats-server");

    // One bash script: every command echoed as a marker, then run; a
    // background command's readiness awaited on a condition.
    let mut script = String::from(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\nwait_for() { for _ in $(seq 600); do if eval \"$1\"; then return 0; fi; sleep 0.1; done; echo \"gave up waiting for $1\" >&2; return 1; }\n",
    );
    let mut pythons = Vec::new();
    let mut background = 0;
    for (language, text) in blocks(&readme) {
        match language.as_str() {
            "sh" => {}
            "python" => {
                pythons.push(
                    text.replace(":4222", &format!(":{port}")).replace(":8080", &format!(":{http_port}")),
                );
                // The first is "python", the next "python 2", ... (walk.py, walk-2.py, ...).
                let (step, file) = match pythons.len() {
                    1 => ("python".to_string(), "walk.py".to_string()),
                    n => (format!("python {n}"), format!("walk-{n}.py")),
                };
                script.push_str(&format!("echo '### {step}'\n\"$LEDGER_WALK_PYTHON\" {file}\n"));
                continue;
            }
            _ => continue, // the Rust example is a fragment, not a program
        }
        for line in text.lines() {
            let line = line.replace(":4222", &format!(":{port}")).replace(":8080", &format!(":{http_port}"));
            let command = line.split(" #").next().unwrap_or("").trim_end().to_string();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            let command = match command.as_str() {
                "cargo run --release -- demo" => "ledger demo".to_string(),
                "scripts/test" => continue,
                // Tests send only to loopback: a serve that could deliver
                // webhooks is told so (the endpoint the walk registers is
                // refused at every delivery, before its name is looked up).
                c if c.contains(" serve") && c.ends_with('&') => {
                    format!("{} --webhook-allow-hosts 127.0.0.1 &", c.trim_end_matches('&').trim_end())
                }
                _ => command,
            };
            // A newline first: output without one (curl's) ends its step.
            script.push_str(&format!("echo; echo {}\n", shell_quote(&format!("### {command}"))));
            if let Some(job) = command.strip_suffix('&') {
                background += 1;
                let log = format!("background-{background}.log");
                script.push_str(&format!("{} > {log} 2>&1 &\n", job.trim_end()));
                if job.contains("nats-server") {
                    script.push_str(&format!("wait_for '(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null'\n"));
                } else if job.contains(" serve") {
                    script.push_str(&format!("wait_for 'grep -q \"serving ledger\" {log}'\n"));
                }
            } else {
                script.push_str(&command);
                script.push('\n');
            }
        }
    }
    std::fs::write(dir.join("walk.sh"), &script).unwrap();
    assert!(pythons.len() >= 2, "the README has a NATS example and a client example in Python");
    for (i, text) in pythons.iter().enumerate() {
        let file = if i == 0 { "walk.py".to_string() } else { format!("walk-{}.py", i + 1) };
        std::fs::write(dir.join(file), text).unwrap();
    }
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        nats_server.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("bash")
        .arg("walk.sh")
        .current_dir(dir)
        .env("PATH", path)
        .env("PYTHONPATH", python_path())
        .env("LEDGER_WALK_PYTHON", python())
        .env("LEDGER_NATS_SERVER", &nats_server)
        .env_remove("LEDGER_NATS")
        .env_remove("LEDGER_DATA")
        .env("LEDGER_LOG", "info,async_nats=warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "the walk stopped:\n{stdout}\n--- stderr\n{stderr}\n--- script\n{script}");

    // What each step printed, by its command.
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix("### ") {
            Some(command) => steps.push((command.to_string(), String::new())),
            None => {
                if let Some((_, output)) = steps.last_mut() {
                    output.push_str(line);
                    output.push('\n');
                }
            }
        }
    }
    let step = |command: &str| -> &str {
        &steps
            .iter()
            .find(|(c, _)| c == command)
            .unwrap_or_else(|| panic!("no step {command:?} in {steps:?}"))
            .1
            .trim_end()
    };
    let json = |command: &str| -> Value {
        serde_json::from_str(step(command).trim())
            .unwrap_or_else(|e| panic!("{command}: {e}: {}", step(command)))
    };

    assert!(step("ledger demo").contains("The ledger is in ./ledger-data"), "{}", step("ledger demo"));
    let tenants = step("ledger tenants");
    for tenant in ["acme", "demo", "globex"] {
        assert!(tenants.contains(tenant), "{tenants}");
    }
    let usage = json("ledger usage acme --json");
    assert_eq!(usage["tenant"], "acme");
    assert_eq!(usage["plan"], "team"); // the demo's move to the EUR plan is refused
    let invoice = json("ledger invoice acme --at 2026-03-15T00:00:00Z --json");
    assert_eq!(invoice["status"], "final");
    assert!(!step("ledger events --tenant acme --json").is_empty());
    let applied: Vec<Value> = step("ledger apply examples/commands.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(applied.len(), 10);
    let codes: Vec<&str> = applied.iter().map(|r| r["code"].as_str().unwrap_or("ok")).collect();
    assert_eq!(
        codes,
        ["ok", "ok", "ok", "ok", "token_limit_exceeded", "ok", "ok", "ok", "ok", "forbidden"],
        "{applied:?}"
    );
    assert!(step("ledger usage initech").contains("initech"));
    assert!(step("ledger audit verify").contains("OK"), "{}", step("ledger audit verify"));
    let explained = step("ledger invoice acme --at 2026-03-15T00:00:00Z --explain");
    assert!(explained.contains("seat-seconds") && explained.contains("subscribed"), "{explained}");
    // The rebuilt directory answers, as of its position.
    assert!(step("ledger --data rebuilt usage acme").contains("acme"));
    assert!(step("ledger audit what-if acme --plan team --at 2026-03-15T00:00:00Z").contains("team"));
    // The Python example against the served, seeded ledger.
    let python = step("python");
    let mut lines = python.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.contains("'ok': True") && first.contains("'duplicate': False"), "{python}");
    assert!(lines.next().unwrap_or_default().contains("'used': 1200"), "{python}");
    // The Python client over HTTP, after the NATS example's 1,200 and the
    // HTTP walk's 800: a decision, a recorded denial, the usage.
    let client = step("python 2");
    let mut lines = client.lines();
    assert_eq!(lines.next(), Some("True False False"), "{client}");
    assert_eq!(lines.next(), Some("False storage_quota_exceeded"), "{client}");
    assert!(lines.next().unwrap_or_default().contains("'used': 2700"), "{client}");
    // HTTP beside NATS, on the same stream: a command, a CloudEvent, the
    // usage that counts both after the Python example's 1,200.
    let curl = |what: &str| {
        let (command, _) = steps.iter().find(|(c, _)| c.starts_with("curl") && c.contains(what)).unwrap();
        json(command)
    };
    assert_eq!(curl("/consume_tokens")["ok"], true);
    assert_eq!(curl("/v1/events")["results"][0]["ok"], true);
    assert_eq!(curl("/usage")["tokens"]["used"], 2000);
    assert_eq!(curl("/healthz")["status"], "ok");
    // The command line queries the directory the running serve holds
    // (sled admits one process): through serve's socket, same figures.
    let served = step("ledger --data ledger-http usage acme");
    assert!(served.contains("tokens   2000 /"), "{served}");
    // A webhook endpoint, on the stream's server: its id and secret, once.
    let added = json("ledger --data ledger-http webhooks add https://hooks.example.com/ledger --tenant acme");
    assert!(added["id"].as_str().is_some_and(|id| id.starts_with("ep_")), "{added}");
    assert!(added["secret"].as_str().is_some_and(|s| s.starts_with("whsec_")), "{added}");
    // The walk's secrets and stores are what .gitignore names.
    let ignored = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
    for written in [
        "auth.conf",
        "nats.conf",
        "ledger.env",
        "nats-store",
        "ledger-served",
        "ledger-http",
        "rebuilt",
        "ledger-data",
        "ledger-cache",
    ] {
        assert!(dir.join(written).exists(), "the walk did not write {written}");
        assert!(ignored.lines().any(|l| l.trim_start_matches('/') == written), ".gitignore lacks {written}");
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Runs the binary with `args` in `dir`; returns (status, stdout, stderr).
fn ledger(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .current_dir(dir)
        .env_remove("LEDGER_NATS")
        .env_remove("LEDGER_DATA")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Points 2 and 9: the demo writes into the data directory and refuses one
/// that already holds a ledger (it used to reject all 32 commands and exit 0).
#[test]
fn the_demo_writes_into_the_data_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = ledger(dir.path(), &["--data", "d", "demo"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ledger --data d usage acme"), "{out}");
    let (code, out, _) = ledger(dir.path(), &["--data", "d", "usage", "acme", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["tenant"], "acme");
    let (code, _, err) = ledger(dir.path(), &["--data", "d", "demo"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already holds a ledger"), "{err}");
}

/// Point 4: a mistyped `--data` is refused, not created and not read as an
/// empty ledger; `audit verify` does not say OK about nothing.
#[test]
fn reading_commands_refuse_a_directory_without_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--data", "nonexistent/dir", "usage", "acme"][..],
        &["--data", "nonexistent/dir", "audit", "verify"],
        &["--data", "nonexistent/dir", "events"],
        &["--data", "nonexistent/dir", "tenants"],
    ] {
        let (code, out, err) = ledger(dir.path(), args);
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(err.contains("no ledger in nonexistent/dir"), "{args:?}: {err}");
    }
    assert!(!dir.path().join("nonexistent").exists(), "a reading command created the directory");
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let (code, out, err) = ledger(dir.path(), &["--data", "empty", "audit", "verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("no ledger in empty"), "{err}");
}

/// Points 7, 8 and 10: a closed pipe ends the demo quietly, logs to a file
/// carry no colour codes, wrong input gets words a user understands, and
/// `ledger tenants` lists the tenants (not `_catalog`).
#[test]
fn errors_and_output_speak_to_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set +o pipefail; {} --data d demo | head -2; echo \"status ${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_ledger")
        ))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in a log that is not a terminal: {stderr:?}");

    let (code, _, err) = ledger(dir.path(), &["--data", "d", "events", "--tenant", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("tenant nosuch has no events"), "{err}");
    let (code, _, err) = ledger(dir.path(), &["--data", "d", "usage", "acme", "--as-of-seq", "999999"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("past the log's last position"), "{err}");
    let (code, _, err) = ledger(dir.path(), &["--data", "d", "invoice", "acme", "--at", "yesterday"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not an RFC 3339 instant") && err.contains("2026-03-15T00:00:00Z"), "{err}");

    let (code, out, _) = ledger(dir.path(), &["--data", "d", "tenants", "--json"]);
    assert_eq!(code, Some(0));
    let tenants: Value = serde_json::from_str(&out).unwrap();
    let listed: Vec<(&str, &str)> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("acme", "active"), ("demo", "active"), ("globex", "cancelled")]);

    // Point 3: the command format is documented where a clone has it.
    let (_, help, _) = ledger(dir.path(), &["apply", "--help"]);
    assert!(help.contains("docs/commands.md") && help.contains("consume_tokens"), "{help}");
    let commands = std::fs::read_to_string(repo().join("docs/commands.md")).unwrap();
    for name in ledger::command::COMMAND_NAMES.iter().filter(|n| **n != "batch") {
        assert!(commands.contains(&format!("### `{name}`")), "docs/commands.md lacks {name}");
    }
    // `apply`'s one argument says what it is.
    assert!(help.contains("<FILE>") && help.contains("`-` for stdin"), "{help}");

    // A data directory of the embedded log, with LEDGER_NATS still exported
    // from the serve walk-through: the error names the variable.
    let server = ledger::bench::natsd::NatsServer::start().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["--data", "d", "usage", "acme"])
        .current_dir(dir.path())
        .env("LEDGER_NATS", server.url())
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("LEDGER_NATS") && err.contains("embedded"), "{err}");
}
