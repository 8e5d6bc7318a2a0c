//! `ledger apply`: JSON Lines commands (an import, a script, the demo)
//! submitted to the engine in order, one result object per line.

use crate::engine::Ledger;

/// Reads JSON Lines commands from a file or stdin.
pub fn read_lines(file: &str) -> anyhow::Result<Vec<String>> {
    use std::io::Read;
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("reading {file}: {e}"))?;
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// How far past the wall clock an `apply` line's `at` may be without
/// `--allow-future`.
pub const MAX_FUTURE_AT: chrono::Duration = chrono::Duration::hours(24);

/// Whether lines may carry an `at` past [`MAX_FUTURE_AT`] (simulations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Future {
    Refuse,
    Allow,
}

/// `future_at` when `at_us` lies more than [`MAX_FUTURE_AT`] after now.
pub fn check_future(at_us: i64) -> Result<(), crate::engine::command::Rejection> {
    let limit_us = (chrono::Utc::now() + MAX_FUTURE_AT).timestamp_micros();
    if at_us > limit_us {
        return Err(crate::engine::command::Rejection::new(
            "future_at",
            format!(
                "at {} is more than 24 hours after the wall clock ({}); pass --allow-future to simulate the future",
                crate::report::rfc3339(at_us),
                crate::report::rfc3339(chrono::Utc::now().timestamp_micros())
            ),
        ));
    }
    Ok(())
}

/// Submits every parsed line in order (pipelined: the engine group-commits
/// them), then waits until the views include the last event.
pub async fn apply_lines(
    ledger: &Ledger,
    lines: &[String],
    future: Future,
) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
    let mut pending = Vec::new();
    let mut malformed = false;
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            // One result per input line: a blank one changes nothing.
            pending.push((i + 1, Err(None)));
            continue;
        }
        let parsed = crate::engine::command::parse_line(line).and_then(|submission| {
            match submission.at_us {
                Some(at_us) if future == Future::Refuse => check_future(at_us)?,
                _ => {}
            }
            Ok(submission)
        });
        match parsed {
            Ok(submission) => pending.push((i + 1, Ok(ledger.submit_nowait(submission).await))),
            Err(rejection) => {
                // A `future_at` line parsed: refused, but not malformed.
                malformed |= rejection.code != "future_at";
                pending.push((i + 1, Err(Some(rejection))));
            }
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for (line, entry) in pending {
        let mut value = match entry {
            Ok(answer) => crate::report::reply_json(&crate::engine::wait(answer).await),
            Err(Some(rejection)) => crate::report::rejection_json(&rejection),
            Err(None) => serde_json::json!({"ok": true, "blank": true}),
        };
        let mut object = serde_json::Map::new();
        object.insert("line".into(), line.into());
        object.append(value.as_object_mut().expect("replies are objects"));
        out.push(serde_json::Value::Object(object));
    }
    ledger.sync().await?;
    Ok((out, malformed))
}
