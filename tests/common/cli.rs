//! The `ledger` command line, as a test runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `ledger --data DATA [--nats URL] ARGS...` with `input` on its standard
/// input (none: an empty one), `LEDGER_NATS` unset and logs at `warn`: its
/// exit code (-1 when killed), standard output and standard error.
pub fn ledger(data: &Path, nats: Option<&str>, args: &[&str], input: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
    command.arg("--data").arg(data).env("LEDGER_LOG", "warn").env_remove("LEDGER_NATS");
    if let Some(url) = nats {
        command.arg("--nats").arg(url);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ledger binary runs");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input.unwrap_or("").as_bytes()).expect("the ledger reads its input");
    drop(stdin);
    let out = child.wait_with_output().expect("the ledger ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        String::from_utf8(out.stderr).expect("UTF-8 errors"),
    )
}
