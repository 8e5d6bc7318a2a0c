//! The service protocol `ledger serve` and its clients share: subject
//! names and inbox prefixes. The server parses what these build.

/// The name the service registers under (NATS service discovery).
pub const SERVICE_NAME: &str = "ledger";
/// Most commands in one batch request.
pub const MAX_BATCH_COMMANDS: usize = 1000;

/// `ledger.cmd.<tenant>.<role>.<command>` (`command` may be `batch`).
pub fn command_subject(tenant: &str, role: &str, command: &str) -> String {
    format!("ledger.cmd.{tenant}.{role}.{command}")
}

/// `ledger.admin.<command>`: the control panel.
pub fn admin_subject(command: &str) -> String {
    format!("ledger.admin.{command}")
}

/// `ledger.query.<tenant>.<view>`.
pub fn query_subject(tenant: &str, view: &str) -> String {
    format!("ledger.query.{tenant}.{view}")
}

/// The inbox prefix a credential may receive replies on: its own, so no
/// credential can read another's replies (`_INBOX.>` would be shared).
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// An RFC 3339 instant (UTC, as precise as needed) for microseconds since
/// the Unix epoch: how the service's JSON writes instants.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

/// Microseconds since the Unix epoch for an RFC 3339 instant.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros())
}
