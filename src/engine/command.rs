//! Commands as callers send them (JSON), parsed into typed values, and the
//! rejections they can meet.

use events::{Actor, Addon, Grants, Payment, PaymentOutcome, Plan, TokenOverage};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A rejected (or denied) command: a stable code, a human message, and for
/// quota denials the numbers behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
    pub details: Vec<(&'static str, u64)>,
    pub cause: Cause,
}

/// What a rejection follows from. HTTP answers 400 only for the request
/// alone (the spec's status rule: a request valid under the OpenAPI
/// document never gets a 400), and 404 or 409 for the ledger's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The request alone shows it: a field's shape or a bound.
    Request,
    /// The ledger's state decides it: an unknown id, a plan's seat range, a
    /// total that would no longer fit, a key used before.
    State,
    /// The request alone shows it, but only by comparing two of its fields
    /// (`min_seats` above `max_seats`, an `Idempotency-Key` header naming
    /// another key than the body): a JSON Schema cannot compare fields, so
    /// HTTP answers these 409, and a request the OpenAPI document accepts
    /// still never gets a 400.
    Combination,
}

impl Rejection {
    /// A rejection with `code`; `malformed`, `invalid_amount` and
    /// `future_at` follow from the request alone, every other code from the
    /// ledger's state (override with [`Rejection::from_request`] or
    /// [`Rejection::from_state`]).
    pub fn new(code: &'static str, message: impl Into<String>) -> Rejection {
        let cause = match code {
            "malformed" | "invalid_amount" | "future_at" => Cause::Request,
            _ => Cause::State,
        };
        Rejection { code, message: message.into(), details: Vec::new(), cause }
    }

    /// The same rejection, caused by the request alone.
    pub fn from_request(mut self) -> Rejection {
        self.cause = Cause::Request;
        self
    }

    /// The same rejection, caused by the ledger's state.
    pub fn from_state(mut self) -> Rejection {
        self.cause = Cause::State;
        self
    }

    /// The same rejection, caused by two of the request's fields together.
    pub fn from_combination(mut self) -> Rejection {
        self.cause = Cause::Combination;
        self
    }

    pub fn malformed(message: impl Into<String>) -> Rejection {
        Rejection::new("malformed", message)
    }

    pub fn with(mut self, key: &'static str, value: u64) -> Rejection {
        self.details.push((key, value));
        self
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A command with who sent it and when (`None`: the ledger's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub at_us: Option<i64>,
    pub actor: Actor,
    pub command: Command,
    /// When a client admitted this upload or token use from its cached
    /// quota while the ledger was unreachable (`admitted_offline_at`): the
    /// ledger records it without a quota check, marked offline.
    pub admitted_offline_at_us: Option<i64>,
    /// The command's `idempotency_key` (commands without a key of their
    /// own): a resend under it answers as the first time.
    pub idempotency_key: Option<String>,
}

impl Submission {
    pub fn new(actor: Actor, command: Command) -> Submission {
        Submission { at_us: None, actor, command, admitted_offline_at_us: None, idempotency_key: None }
    }
}

/// Takes the optional `idempotency_key` field out of a command's fields.
/// Uploads, token use and add-on purchases carry their own key (`file`,
/// `request`, `purchase`), so they take none.
pub fn take_idempotency_key(fields: &mut Map<String, Value>) -> Result<Option<String>, Rejection> {
    let Some(value) = fields.remove("idempotency_key") else { return Ok(None) };
    // Even a null: the field is not one of theirs.
    if let Some((own, key)) = fields.get("cmd").and_then(Value::as_str).and_then(|c| Some((c, own_key(c)?))) {
        return Err(Rejection::malformed(format!(
            "{own} is keyed by its own {key}; it takes no idempotency_key"
        )));
    }
    match value {
        Value::Null => Ok(None),
        Value::String(key) => Ok(Some(id("idempotency_key", key)?)),
        other => Err(Rejection::malformed(format!("idempotency_key must be a string, not {other}"))),
    }
}

/// The field that is the idempotency key of a command that has its own.
pub fn own_key(command: &str) -> Option<&'static str> {
    match command {
        "upload" => Some("file"),
        "consume_tokens" => Some("request"),
        "purchase_addon" => Some("purchase"),
        _ => None,
    }
}

/// Whether a client may admit the command offline (`admitted_offline_at`).
pub fn offline_admissible(command: &str) -> bool {
    matches!(command, "upload" | "consume_tokens")
}

/// Takes the optional `admitted_offline_at` field out of a command's fields.
pub fn take_admitted_offline(fields: &mut Map<String, Value>) -> Result<Option<i64>, Rejection> {
    let Some(value) = fields.remove("admitted_offline_at") else { return Ok(None) };
    // Even a null: the field is not one of theirs.
    if !fields.get("cmd").and_then(Value::as_str).is_some_and(offline_admissible) {
        return Err(Rejection::malformed("only upload and consume_tokens can be admitted offline"));
    }
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(parse_at(&s)?)),
        other => Err(Rejection::malformed(format!("admitted_offline_at must be a string, not {other}"))),
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Command {
    DefinePlan(Plan),
    DefineAddon(Addon),
    Subscribe {
        tenant: String,
        plan: String,
        seats: i64,
    },
    SetSeats {
        tenant: String,
        seats: i64,
    },
    ChangePlan {
        tenant: String,
        plan: String,
    },
    Cancel {
        tenant: String,
    },
    Upload {
        tenant: String,
        file: String,
        bytes: i64,
    },
    DeleteFile {
        tenant: String,
        file: String,
    },
    ConsumeTokens {
        tenant: String,
        request: String,
        tokens: i64,
    },
    PurchaseAddon {
        tenant: String,
        addon: String,
        purchase: String,
        quantity: i64,
        payment: Payment,
    },
    SettlePayment {
        tenant: String,
        purchase: String,
        outcome: PaymentOutcome,
        reference: Option<String>,
    },
    CancelAddon {
        tenant: String,
        purchase: String,
    },
    ClosePeriod {
        tenant: String,
    },
    /// Each list ascending, once each, within the bounds.
    SetUsageAlerts {
        tenant: String,
        tokens: Option<Vec<u32>>,
        storage: Option<Vec<u32>>,
    },
}

/// Domain and version tag of [`Command::fingerprint`].
const FINGERPRINT_TAG: &[u8] = b"ledger/command/v1\0";

impl Command {
    /// SHA-256 of the command as parsed (name and fields, decimals
    /// normalized; not who sent it nor when): what an idempotency key
    /// records, so a resend matches and another command does not. It
    /// covers the canonical bincode of this enum, whose variants are only
    /// appended: a field added to a variant would make that command's older
    /// keys conflict rather than match.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_TAG);
        hasher.update(events::canonical_bytes(self));
        hasher.finalize().into()
    }

    /// The command's `cmd` name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::DefinePlan(_) => "define_plan",
            Command::DefineAddon(_) => "define_addon",
            Command::Subscribe { .. } => "subscribe",
            Command::SetSeats { .. } => "set_seats",
            Command::ChangePlan { .. } => "change_plan",
            Command::Cancel { .. } => "cancel",
            Command::Upload { .. } => "upload",
            Command::DeleteFile { .. } => "delete_file",
            Command::ConsumeTokens { .. } => "consume_tokens",
            Command::PurchaseAddon { .. } => "purchase_addon",
            Command::SettlePayment { .. } => "settle_payment",
            Command::CancelAddon { .. } => "cancel_addon",
            Command::ClosePeriod { .. } => "close_period",
            Command::SetUsageAlerts { .. } => "set_usage_alerts",
        }
    }

    /// The tenant the command is about; `None` for catalog commands.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Command::DefinePlan(_) | Command::DefineAddon(_) => None,
            Command::Subscribe { tenant, .. }
            | Command::SetSeats { tenant, .. }
            | Command::ChangePlan { tenant, .. }
            | Command::Cancel { tenant }
            | Command::Upload { tenant, .. }
            | Command::DeleteFile { tenant, .. }
            | Command::ConsumeTokens { tenant, .. }
            | Command::PurchaseAddon { tenant, .. }
            | Command::SettlePayment { tenant, .. }
            | Command::CancelAddon { tenant, .. }
            | Command::ClosePeriod { tenant }
            | Command::SetUsageAlerts { tenant, .. } => Some(tenant),
        }
    }
}

/// The names `cmd` may take.
pub const COMMAND_NAMES: [&str; 15] = [
    "define_plan",
    "define_addon",
    "subscribe",
    "set_seats",
    "change_plan",
    "cancel",
    "upload",
    "delete_file",
    "consume_tokens",
    "purchase_addon",
    "settle_payment",
    "cancel_addon",
    "close_period",
    "set_usage_alerts",
    "batch",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum OverageJson {
    Word(String),
    Bill(BillJson),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BillJson {
    bill_per_1k: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanJson {
    id: String,
    name: Option<String>,
    currency: String,
    price: String,
    per_seat: bool,
    min_seats: Option<CountJson>,
    max_seats: Option<CountJson>,
    storage_quota_gb: String,
    monthly_token_limit: CountJson,
    token_overage: OverageJson,
    addons: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsJson {
    storage_gb: Option<String>,
    tokens: Option<CountJson>,
    feature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddonJson {
    id: String,
    name: Option<String>,
    currency: String,
    price: String,
    recurring: bool,
    grants: GrantsJson,
}

/// The wire shape of every command but the catalog's, keyed by `cmd`.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
enum WireCommand {
    DefinePlan {
        plan: PlanJson,
    },
    DefineAddon {
        addon: AddonJson,
    },
    Subscribe {
        tenant: String,
        plan: String,
        seats: CountJson,
    },
    SetSeats {
        tenant: String,
        seats: CountJson,
    },
    ChangePlan {
        tenant: String,
        plan: String,
    },
    Cancel {
        tenant: String,
    },
    Upload {
        tenant: String,
        file: String,
        bytes: CountJson,
    },
    DeleteFile {
        tenant: String,
        file: String,
    },
    ConsumeTokens {
        tenant: String,
        request: String,
        tokens: CountJson,
    },
    PurchaseAddon {
        tenant: String,
        addon: String,
        purchase: String,
        quantity: Option<CountJson>,
        payment: String,
    },
    SettlePayment {
        tenant: String,
        purchase: String,
        outcome: String,
        reference: Option<String>,
    },
    CancelAddon {
        tenant: String,
        purchase: String,
    },
    ClosePeriod {
        tenant: String,
    },
    SetUsageAlerts {
        tenant: String,
        tokens: Option<Vec<CountJson>>,
        storage: Option<Vec<CountJson>>,
    },
}

/// The largest count a command may carry (2^53 - 1, the spec's Bounds:
/// every JSON implementation represents it exactly).
pub const MAX_COUNT: i64 = (1 << 53) - 1;
/// Longest id (plan, add-on, purchase, request, file, reference, feature).
pub const MAX_ID_BYTES: usize = 128;
/// Longest plan or add-on name.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest decimal (prices, `bill_per_1k`, GB amounts) and its most
/// decimal places.
pub const MAX_DECIMAL: i64 = 1_000_000_000_000;
pub const MAX_DECIMAL_PLACES: u32 = 12;
/// The decimals [`decimal`] accepts, as an ECMA-262 regular expression (the
/// OpenAPI document's `pattern`): leading zeros, then 10^12 or at most 12
/// digits, then at most 12 places.
pub const DECIMAL_PATTERN: &str = r"^0*(1000000000000(\.0{1,12})?|[0-9]{1,12}(\.[0-9]{1,12})?)$";

/// A count as sent: any JSON number, checked by [`count`] so that a count
/// too large for an `i64` is `invalid_amount`, not a parse error.
#[derive(Deserialize)]
#[serde(transparent)]
struct CountJson(serde_json::Number);

fn out_of_range(field: &str, value: impl std::fmt::Display) -> Rejection {
    Rejection::new("invalid_amount", format!("{field} {value} is out of range (at most {MAX_COUNT})"))
}

/// An integer count up to [`MAX_COUNT`] (negative ones pass: each command
/// says what it does with those).
fn count(field: &str, value: &CountJson) -> Result<i64, Rejection> {
    let n = &value.0;
    if let Some(i) = n.as_i64() {
        return if i > MAX_COUNT || i < -MAX_COUNT { Err(out_of_range(field, i)) } else { Ok(i) };
    }
    if n.as_u64().is_some() {
        return Err(out_of_range(field, n));
    }
    match n.as_f64() {
        // Beyond i64 serde_json falls back to a float: still an integer
        // that is too large.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() > MAX_COUNT as f64 => {
            Err(out_of_range(field, n))
        }
        // `2.0` and `1e3` are integers to JSON Schema (a number with no
        // fractional part), so the OpenAPI document's `integer` admits
        // them; within the bound a float holds them exactly.
        Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(f as i64),
        _ => Err(Rejection::malformed(format!("{field} {n} is not an integer"))),
    }
}

/// A decimal string (prices, `bill_per_1k`, GB amounts): digits with an
/// optional fraction, no sign, exponent or whitespace (otherwise
/// `malformed`); at most [`MAX_DECIMAL_PLACES`] places as written, at most
/// [`MAX_DECIMAL`], never negative (otherwise `invalid_amount`). Exactly
/// what [`DECIMAL_PATTERN`] admits, so the OpenAPI document and the parser
/// agree on every string.
fn decimal(field: &str, text: &str) -> Result<Decimal, Rejection> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, places) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if !digits(whole) || (unsigned.contains('.') && !digits(places)) {
        return Err(Rejection::malformed(format!(
            "{field} {:?} is not a decimal string (digits, optionally a point and more digits)",
            truncated(text)
        )));
    }
    let out_of_range = |why: &str| {
        Rejection::new("invalid_amount", format!("{field} {} is out of range: {why}", truncated(text)))
    };
    if unsigned.len() != text.len() {
        return Err(out_of_range("amounts are never negative"));
    }
    if places.len() > MAX_DECIMAL_PLACES as usize {
        return Err(out_of_range(&format!("at most {MAX_DECIMAL_PLACES} decimal places")));
    }
    let whole = whole.trim_start_matches('0');
    let too_large = || out_of_range(&format!("at most {MAX_DECIMAL}"));
    if whole.len() > MAX_DECIMAL.to_string().len() {
        return Err(too_large());
    }
    // At most 13 integer and 12 decimal digits: well within a Decimal.
    let value = format!("{}.{places}", if whole.is_empty() { "0" } else { whole })
        .trim_end_matches('.')
        .parse::<Decimal>()
        .map_err(|_| too_large())?;
    if value > Decimal::from(MAX_DECIMAL) {
        return Err(too_large());
    }
    Ok(value.normalize())
}

/// [`valid_command_id`] as a regular expression (with `minLength` 1 and
/// `maxLength` [`MAX_ID_BYTES`] in the OpenAPI document).
pub const ID_PATTERN: &str = "^[!-~]+$";

/// Ids chosen by callers: 1 to [`MAX_ID_BYTES`] bytes of printable ASCII
/// without spaces (the spec's Bounds; the persisted schema accepts more, so
/// older events still decode).
pub fn valid_command_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.bytes().all(|b| b.is_ascii_graphic())
}

fn id(field: &str, value: String) -> Result<String, Rejection> {
    if valid_command_id(&value) {
        Ok(value)
    } else {
        Err(Rejection::malformed(format!(
            "{field} {:?} must be 1 to {MAX_ID_BYTES} bytes of printable ASCII without spaces",
            truncated(&value)
        )))
    }
}

/// No control characters (Unicode's `Cc`, what [`char::is_control`]
/// refuses), as a regular expression; a name's 256 bytes no schema can
/// count, so the OpenAPI document admits the names that surely fit.
pub const NAME_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

fn name(field: &str, value: Option<String>) -> Result<Option<String>, Rejection> {
    match value {
        Some(n) if n.len() > MAX_NAME_BYTES || n.chars().any(char::is_control) => {
            Err(Rejection::malformed(format!(
                "{field} {:?} must be at most {MAX_NAME_BYTES} bytes without control characters",
                truncated(&n)
            )))
        }
        other => Ok(other),
    }
}

/// At most 64 characters of `text` for a message: an error must not echo
/// a megabyte back.
fn truncated(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// [`tenant_id`]'s rule as a regular expression.
pub const TENANT_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";

/// A tenant id as the spec allows it, or `malformed` saying what is wrong.
pub fn tenant_id(value: &str) -> Result<(), Rejection> {
    if events::valid_tenant_id(value) {
        Ok(())
    } else {
        Err(Rejection::malformed(format!(
            "tenant {:?} must match [a-z0-9][a-z0-9-]{{0,62}}",
            truncated(value)
        )))
    }
}

fn tenant(value: String) -> Result<String, Rejection> {
    tenant_id(&value)?;
    Ok(value)
}

fn currency(value: String) -> Result<String, Rejection> {
    if projections::money::minor_units(&value).is_some() {
        Ok(value)
    } else {
        Err(Rejection::malformed(format!(
            "currency {value:?} is not one the ledger knows (ISO 4217, e.g. USD)"
        )))
    }
}

/// A count the ledger stores as a `u32` (seats, quantity), kept as the
/// `i64` the command carries: past `u32::MAX` is the request's fault
/// whatever the ledger's state, as `code` (below 1 is the decider's to
/// say).
fn count_stored_u32(field: &str, value: &CountJson, code: &'static str) -> Result<i64, Rejection> {
    let value = count(field, value)?;
    if value > i64::from(u32::MAX) {
        return Err(Rejection::new(code, format!("{field} {value} is out of range (at most {})", u32::MAX))
            .from_request());
    }
    Ok(value)
}

fn count_u32(field: &str, value: &CountJson) -> Result<u32, Rejection> {
    let value = count(field, value)?;
    u32::try_from(value)
        .map_err(|_| Rejection::new("invalid_amount", format!("{field} {value} is out of range")))
}

/// A count that must not be negative.
fn count_u64(field: &str, value: &CountJson) -> Result<u64, Rejection> {
    let value = count(field, value)?;
    u64::try_from(value).map_err(|_| Rejection::new("invalid_amount", format!("{field} {value} is negative")))
}

fn plan(json: PlanJson) -> Result<Plan, Rejection> {
    let token_overage = match json.token_overage {
        OverageJson::Word(w) if w == "block" => TokenOverage::Block,
        OverageJson::Word(w) => {
            return Err(Rejection::malformed(format!(
                "token_overage {w:?} is neither \"block\" nor {{\"bill_per_1k\": ...}}"
            )))
        }
        OverageJson::Bill(BillJson { bill_per_1k }) => {
            TokenOverage::BillPer1k { price: decimal("bill_per_1k", &bill_per_1k)? }
        }
    };
    Ok(Plan {
        id: id("plan id", json.id)?,
        name: name("plan name", json.name)?,
        currency: currency(json.currency)?,
        price: decimal("price", &json.price)?,
        per_seat: json.per_seat,
        min_seats: json.min_seats.map_or(Ok(1), |m| count_u32("min_seats", &m))?,
        max_seats: json.max_seats.map(|m| count_u32("max_seats", &m)).transpose()?,
        storage_quota_gb: decimal("storage_quota_gb", &json.storage_quota_gb)?,
        monthly_token_limit: count_u64("monthly_token_limit", &json.monthly_token_limit)?,
        token_overage,
        addons: json.addons.into_iter().map(|a| id("add-on id", a)).collect::<Result<_, _>>()?,
    })
}

fn addon(json: AddonJson) -> Result<Addon, Rejection> {
    Ok(Addon {
        id: id("add-on id", json.id)?,
        name: name("add-on name", json.name)?,
        currency: currency(json.currency)?,
        price: decimal("price", &json.price)?,
        recurring: json.recurring,
        grants: Grants {
            storage_gb: json.grants.storage_gb.map(|g| decimal("storage_gb", &g)).transpose()?,
            tokens: json.grants.tokens.map(|t| count_u64("tokens grant", &t)).transpose()?,
            feature: json.grants.feature.map(|f| id("feature", f)).transpose()?,
        },
    })
}

/// A usage alert list: at most [`events::MAX_ALERTS`] percentages from 1 to
/// [`events::MAX_ALERT_PERCENT`], returned ascending and once each.
fn thresholds(field: &str, list: &[CountJson]) -> Result<Vec<u32>, Rejection> {
    if list.len() > events::MAX_ALERTS {
        return Err(Rejection::new(
            "invalid_amount",
            format!("{field}: at most {} thresholds, not {}", events::MAX_ALERTS, list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for value in list {
        let percent = count(field, value)?;
        match u32::try_from(percent) {
            Ok(p) if (1..=events::MAX_ALERT_PERCENT).contains(&p) => out.push(p),
            _ => {
                return Err(Rejection::new(
                    "invalid_amount",
                    format!(
                        "{field}: a threshold is 1 to {} percent, not {percent}",
                        events::MAX_ALERT_PERCENT
                    ),
                ))
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses the fields of one command (everything but `at` and `actor`),
/// `cmd` included.
pub fn parse_command(fields: Map<String, Value>) -> Result<Command, Rejection> {
    let name = fields.get("cmd").and_then(Value::as_str).map(str::to_string);
    match name.as_deref() {
        None => return Err(Rejection::malformed("missing \"cmd\"")),
        Some(n) if !COMMAND_NAMES.contains(&n) || n == "batch" => {
            let known: Vec<&str> = COMMAND_NAMES.iter().copied().filter(|c| *c != "batch").collect();
            return Err(Rejection::malformed(format!(
                "unknown command {:?}; the commands are {}",
                truncated(n),
                known.join(", ")
            )));
        }
        _ => {}
    }
    let wire: WireCommand = serde_json::from_value(Value::Object(fields))
        .map_err(|e| Rejection::malformed(format!("{}: {e}", name.unwrap_or_default())))?;
    Ok(match wire {
        WireCommand::DefinePlan { plan: p } => Command::DefinePlan(plan(p)?),
        WireCommand::DefineAddon { addon: a } => Command::DefineAddon(addon(a)?),
        WireCommand::Subscribe { tenant: t, plan, seats } => {
            let seats = count_stored_u32("seats", &seats, "invalid_seats")?;
            Command::Subscribe { tenant: tenant(t)?, plan: id("plan", plan)?, seats }
        }
        WireCommand::SetSeats { tenant: t, seats } => Command::SetSeats {
            tenant: tenant(t)?,
            seats: count_stored_u32("seats", &seats, "invalid_seats")?,
        },
        WireCommand::ChangePlan { tenant: t, plan } => {
            Command::ChangePlan { tenant: tenant(t)?, plan: id("plan", plan)? }
        }
        WireCommand::Cancel { tenant: t } => Command::Cancel { tenant: tenant(t)? },
        WireCommand::Upload { tenant: t, file, bytes } => {
            Command::Upload { tenant: tenant(t)?, file: id("file", file)?, bytes: count("bytes", &bytes)? }
        }
        WireCommand::DeleteFile { tenant: t, file } => {
            Command::DeleteFile { tenant: tenant(t)?, file: id("file", file)? }
        }
        WireCommand::ConsumeTokens { tenant: t, request, tokens } => Command::ConsumeTokens {
            tenant: tenant(t)?,
            request: id("request", request)?,
            tokens: count("tokens", &tokens)?,
        },
        WireCommand::PurchaseAddon { tenant: t, addon, purchase, quantity, payment } => {
            Command::PurchaseAddon {
                tenant: tenant(t)?,
                addon: id("addon", addon)?,
                purchase: id("purchase", purchase)?,
                quantity: quantity.map_or(Ok(1), |q| count_stored_u32("quantity", &q, "invalid_amount"))?,
                payment: match payment.as_str() {
                    "invoice" => Payment::Invoice,
                    "card" => Payment::Card,
                    other => {
                        return Err(Rejection::malformed(format!(
                            "payment {other:?} is neither \"invoice\" nor \"card\""
                        )))
                    }
                },
            }
        }
        WireCommand::SettlePayment { tenant: t, purchase, outcome, reference } => Command::SettlePayment {
            tenant: tenant(t)?,
            purchase: id("purchase", purchase)?,
            outcome: match outcome.as_str() {
                "paid" => PaymentOutcome::Paid,
                "failed" => PaymentOutcome::Failed,
                other => {
                    return Err(Rejection::malformed(format!(
                        "outcome {other:?} is neither \"paid\" nor \"failed\""
                    )))
                }
            },
            reference: reference.map(|r| id("reference", r)).transpose()?,
        },
        WireCommand::CancelAddon { tenant: t, purchase } => {
            Command::CancelAddon { tenant: tenant(t)?, purchase: id("purchase", purchase)? }
        }
        WireCommand::ClosePeriod { tenant: t } => Command::ClosePeriod { tenant: tenant(t)? },
        WireCommand::SetUsageAlerts { tenant: t, tokens, storage } => {
            if tokens.is_none() && storage.is_none() {
                return Err(Rejection::malformed("set_usage_alerts needs tokens, storage or both"));
            }
            Command::SetUsageAlerts {
                tenant: tenant(t)?,
                tokens: tokens.map(|list| thresholds("tokens", &list)).transpose()?,
                storage: storage.map(|list| thresholds("storage", &list)).transpose()?,
            }
        }
    })
}

/// The last year an instant may be written in: a period holding any
/// instant of it ends before 10000, so every instant the ledger answers
/// with is still RFC 3339 (four-digit years).
pub const LAST_YEAR: u32 = 9998;
/// An instant's year up to [`LAST_YEAR`], as a regular expression (beside
/// `format: date-time` in the OpenAPI document).
pub const INSTANT_PATTERN: &str = "^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-";

/// Parses an RFC 3339 instant into microseconds (years up to
/// [`LAST_YEAR`]).
pub fn parse_at(text: &str) -> Result<i64, Rejection> {
    let year = text.get(..4).and_then(|y| y.parse::<u32>().ok());
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) if year.is_some_and(|y| y <= LAST_YEAR) => Ok(t.timestamp_micros()),
        _ => Err(Rejection::malformed(format!(
            "at {:?} is not an RFC 3339 instant with a time zone up to the year {LAST_YEAR}, such as \
             2026-03-15T00:00:00Z",
            truncated(text)
        ))),
    }
}

/// Parses one JSON Lines command: `{"at"?, "actor"?, "cmd", ...fields}`.
pub fn parse_line(line: &str) -> Result<Submission, Rejection> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| Rejection::malformed(format!("not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(Rejection::malformed("a command is a JSON object"));
    };
    let at_us = match fields.remove("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_at(&s)?),
        Some(other) => return Err(Rejection::malformed(format!("at must be a string, not {other}"))),
    };
    let actor = match fields.remove("actor") {
        None | Some(Value::Null) => Actor::Admin,
        Some(Value::String(s)) => Actor::parse(&s).ok_or_else(|| {
            Rejection::malformed(format!("actor {s:?} is not admin, <tenant>:admin or <tenant>:user"))
        })?,
        Some(other) => return Err(Rejection::malformed(format!("actor must be a string, not {other}"))),
    };
    let admitted_offline_at_us = take_admitted_offline(&mut fields)?;
    let idempotency_key = take_idempotency_key(&mut fields)?;
    Ok(Submission { at_us, actor, command: parse_command(fields)?, admitted_offline_at_us, idempotency_key })
}
