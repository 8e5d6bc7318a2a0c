//! `ledger nats-config`: the nats-server `authorization` block that gives
//! each credential only its own tenant and role.

use ledger_client::protocol::inbox_prefix;

/// One tenant's two credentials in the NATS configuration.
#[derive(Debug, Clone)]
pub struct TenantCredentials {
    pub tenant: String,
    pub admin_password: String,
    pub user_password: String,
}

/// JetStream API subjects the `ledger` credential is denied.
const LEDGER_DENIED: [&str; 4] = [
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.UPDATE.>",
];

/// The `authorization` block of the shipped nats-server configuration:
/// - `ledger` (the service): everything, and the only user that may publish
///   to the `LEDGER` stream's subjects (`ledger.v1.>`) or use JetStream;
/// - `panel` (the control panel): `ledger.admin.>` and every tenant's views;
///   it may subscribe to every notification (`ledger.notify.>`);
/// - per tenant `<t>-admin` and `<t>-user`: their own role's command
///   subjects `ledger.cmd.<t>.<role>.>` and their tenant's views
///   `ledger.query.<t>.>`, nothing else; they may subscribe to their own
///   tenant's notifications (`ledger.notify.<t>.>`).
///
/// Each non-ledger user receives replies only on its own inbox prefix.
pub fn nats_authorization(
    ledger_password: &str,
    panel_password: &str,
    tenants: &[TenantCredentials],
) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings encode");
    let user = |name: &str, password: &str, publish: &[String], notifications: &str| {
        let publish: Vec<String> = publish.iter().map(|s| quote(s)).collect();
        format!(
            "    {{ user: {}, password: {}, permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}, {}] }}\n    }} }}\n",
            quote(name),
            quote(password),
            publish.join(", "),
            quote(&format!("{}.>", inbox_prefix(name))),
            quote(notifications)
        )
    };
    let mut out = String::from("authorization {\n  users = [\n");
    // The ledger never deletes, purges or reconfigures its stream: deny it
    // those, so not even a bug or a forged reply subject can.
    out.push_str(&format!(
        "    {{ user: \"ledger\", password: {}, permissions: {{\n        publish: {{ allow: \">\", deny: [{}] }}\n        subscribe: \">\"\n    }} }}\n",
        quote(ledger_password),
        LEDGER_DENIED.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
    ));
    out.push_str(&user(
        "panel",
        panel_password,
        &["ledger.admin.>".into(), "ledger.query.>".into()],
        "ledger.notify.>",
    ));
    for t in tenants {
        let tenant = &t.tenant;
        assert!(events::valid_tenant_id(tenant), "tenant ids are checked by the caller");
        for (role, password) in [("admin", &t.admin_password), ("user", &t.user_password)] {
            out.push_str(&user(
                &format!("{tenant}-{role}"),
                password,
                &[format!("ledger.cmd.{tenant}.{role}.>"), format!("ledger.query.{tenant}.>")],
                &format!("ledger.notify.{tenant}.>"),
            ));
        }
    }
    out.push_str("  ]\n}\n");
    out
}

/// The same passwords as exported shell variables (`. ./ledger.env`), for scripts and the README's
/// commands: `LEDGER_PASSWORD`, `PANEL_PASSWORD`, and per tenant
/// `<TENANT>_ADMIN_PASSWORD` and `<TENANT>_USER_PASSWORD` (the tenant id
/// upper-cased, `-` as `_`, `TENANT_` before a leading digit). Passwords
/// are hex, so no quoting is needed.
pub fn credentials_env(ledger_password: &str, panel_password: &str, tenants: &[TenantCredentials]) -> String {
    let mut out =
        format!("export LEDGER_PASSWORD={ledger_password}\nexport PANEL_PASSWORD={panel_password}\n");
    for t in tenants {
        let mut name = t.tenant.to_uppercase().replace('-', "_");
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            // A shell variable cannot start with a digit.
            name.insert_str(0, "TENANT_");
        }
        out.push_str(&format!(
            "export {name}_ADMIN_PASSWORD={}\nexport {name}_USER_PASSWORD={}\n",
            t.admin_password, t.user_password
        ));
    }
    out
}
