//! Where webhooks may go, and the one way they get there.
//!
//! A delivery is a request the ledger makes on someone's say-so, so where
//! it may connect is checked, and the connection goes to the address that
//! was checked (a name is resolved once per attempt; nothing resolves it
//! again between the check and the connect, so DNS rebinding cannot slip
//! another address in). Redirects are not followed: an answer is an answer.
//!
//! - `serve --webhook-allow-hosts H1,H2`: an allowlist of hosts (names or
//!   addresses, compared as written in the URL). A host not on it is
//!   refused before any lookup of it leaves the machine.
//! - An endpoint registered with a tenant key may not reach a loopback,
//!   private, link-local or otherwise non-public address unless `serve
//!   --webhook-allow-private`; checked at registration and at every
//!   delivery, for every address the name resolves to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::engine::command::Rejection;

/// What the service's flags allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// `--webhook-allow-hosts`: when set, the only hosts deliveries reach.
    pub allow_hosts: Option<Vec<String>>,
    /// `--webhook-allow-private`: tenants' endpoints may be non-public.
    pub allow_private: bool,
}

/// A destination that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// As the URL names it (the TLS name and the `Host` header).
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
    /// Where to connect: the address that was checked.
    pub address: SocketAddr,
}

/// The stable code of a refused destination (HTTP 403: the request is
/// well formed; the ledger will not go there).
pub const REFUSED: &str = "webhook_destination_refused";

fn refused(message: String) -> Rejection {
    Rejection::new(REFUSED, message)
}

/// Whether an address is one the public internet routes to: not loopback,
/// private (RFC 1918, unique local), link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation, benchmarking or
/// reserved; IPv4 inside IPv6 (mapped, NAT64) is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return public_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// A webhook URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

/// The webhook URLs the ledger takes, as the OpenAPI document says them:
/// `http` or `https`; a host of letters, digits, dots and hyphens, or an
/// IPv6 address in brackets; a port up to 65535; a path and query of URI
/// characters; nothing else (no user information, no fragment). A URL is
/// checked by [`well_formed`], the same rule in code (`tests/contract.rs`
/// holds the two together), before anything else reads it.
pub const URL_PATTERN: &str = concat!(
    r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
    r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?)?$",
);
/// The longest webhook URL taken.
pub const MAX_URL_BYTES: usize = 2048;

/// Whether `url` is one [`URL_PATTERN`] admits, at most [`MAX_URL_BYTES`].
pub fn well_formed(url: &str) -> bool {
    let uri_chars = |text: &str, extra: &[u8]| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@%/-".contains(&b) || extra.contains(&b))
    };
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // The host, well formed, and what follows it (nothing, or `:port`).
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, port)) => (
                !address.is_empty()
                    && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                port,
            ),
            None => return false,
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (
                !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
                port,
            )
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits.len() < 5
                    || (!digits.starts_with('0') && digits.parse::<u32>().is_ok_and(|p| p <= 65_535)))
        });
    let tail_ok = match tail.split_once('?') {
        Some((path, query)) => uri_chars(path, b"") && uri_chars(query, b"?"),
        None => uri_chars(tail, b""),
    };
    url.len() <= MAX_URL_BYTES && host_ok && port_ok && tail_ok
}

/// Parses a webhook URL: one [`well_formed`] admits, taken apart.
pub fn parse(url: &str) -> Result<Destination, Rejection> {
    if !well_formed(url) {
        return Err(Rejection::malformed(format!(
            "{url:?} is not a webhook URL: http:// or https://, a host (letters, digits, dots, hyphens, or an \
             address), an optional port, a path and query of URI characters, at most {MAX_URL_BYTES} bytes"
        )));
    }
    let uri: axum::http::Uri =
        url.parse().map_err(|_| Rejection::malformed(format!("{url:?} is not a URL")))?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or_else(|| Rejection::malformed("a webhook URL names a host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path_and_query = uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Destination { https, host, port, path_and_query })
}

impl Egress {
    /// The allowlist: a host not on it is refused, by its name, before
    /// anything looks it up.
    fn allows(&self, host: &str) -> Result<(), Rejection> {
        match &self.allow_hosts {
            Some(allowed)
                if !allowed
                    .iter()
                    .any(|h| h.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host)) =>
            {
                Err(refused(format!("{host} is not among this ledger's allowed webhook hosts")))
            }
            _ => Ok(()),
        }
    }
}

/// Whether an endpoint may be registered: a URL as [`parse`] takes it, on
/// the allowlist, and for a tenant's endpoint public at every address its
/// host resolves to (unless private ones are allowed; only then is the
/// name looked up).
pub async fn check_registration(url: &str, egress: &Egress, by_tenant: bool) -> Result<(), Rejection> {
    let destination = parse(url)?;
    egress.allows(&destination.host)?;
    if by_tenant && !egress.allow_private {
        addresses(&destination, egress, by_tenant).await?;
    }
    Ok(())
}

/// Where a delivery connects: the URL checked as [`check_registration`]
/// does, its host resolved once, every address checked, the first taken.
pub async fn resolve(url: &str, egress: &Egress, by_tenant: bool) -> Result<Target, Rejection> {
    let destination = parse(url)?;
    egress.allows(&destination.host)?;
    let address = addresses(&destination, egress, by_tenant).await?[0];
    let Destination { https, host, port, path_and_query } = destination;
    Ok(Target { https, host, port, path_and_query, address })
}

/// The destination's addresses (at least one), each public when it must be.
async fn addresses(
    destination: &Destination,
    egress: &Egress,
    by_tenant: bool,
) -> Result<Vec<SocketAddr>, Rejection> {
    let (host, port) = (destination.host.as_str(), destination.port);
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| refused(format!("resolving {host} took too long")))?
            .map_err(|e| refused(format!("{host} does not resolve: {e}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(refused(format!("{host} resolves to no address")));
    }
    if by_tenant && !egress.allow_private {
        if let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
            return Err(refused(format!(
                "{host} resolves to {}, which is not a public address; a tenant's webhook must be",
                private.ip()
            )));
        }
    }
    Ok(addresses)
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
}

/// POSTs `body` with `headers` to the checked `target`, within `timeout`
/// (connecting, TLS, sending, the answer). Follows no redirect. A
/// connection to the same checked address is kept for the next delivery.
pub async fn post(
    target: &Target,
    headers: &[(&str, String)],
    body: bytes::Bytes,
    timeout: Duration,
) -> Result<Answer, String> {
    tokio::time::timeout(timeout, post_now(target, headers, body))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn post_now(target: &Target, headers: &[(&str, String)], body: bytes::Bytes) -> Result<Answer, String> {
    let host_header = if (target.https && target.port == 443) || (!target.https && target.port == 80) {
        target.host.clone()
    } else if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = || {
        let mut request = hyper::Request::post(&target.path_and_query)
            .header(hyper::header::HOST, host_header.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("ledger-webhooks/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.body(http_body_util::Full::new(body.clone())).map_err(|e| e.to_string())
    };
    let key = PoolKey { address: target.address, https: target.https, host: target.host.clone() };
    // A kept connection the receiver has closed meanwhile fails before
    // anything is sent: then once more on a new one.
    let (sender, response) = match idle(&key) {
        Some(mut sender) => match sender.send_request(request()?).await {
            Ok(response) => (sender, response),
            Err(_) => {
                let mut sender = connect(target).await?;
                let response = sender.send_request(request()?).await.map_err(|e| format!("HTTP: {e}"))?;
                (sender, response)
            }
        },
        None => {
            let mut sender = connect(target).await?;
            let response = sender.send_request(request()?).await.map_err(|e| format!("HTTP: {e}"))?;
            (sender, response)
        }
    };
    let status = response.status().as_u16();
    // The answer's body is read (a little of it at most) so the connection
    // can carry the next delivery to the same address.
    use http_body_util::BodyExt;
    let drained = http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await.is_ok();
    if drained && !sender.is_closed() {
        keep(key, sender);
    }
    Ok(Answer { status })
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Idle connections by the address they were opened to (the one checked),
/// and the TLS name: a delivery reuses one only to the very address its
/// own check gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: SocketAddr,
    https: bool,
    host: String,
}

/// Most idle connections kept per address.
const IDLE_PER_ADDRESS: usize = 32;

fn pool() -> &'static std::sync::Mutex<std::collections::HashMap<PoolKey, Vec<Sender>>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PoolKey, Vec<Sender>>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

fn idle(key: &PoolKey) -> Option<Sender> {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    let senders = pool.get_mut(key)?;
    while let Some(sender) = senders.pop() {
        if !sender.is_closed() && sender.is_ready() {
            return Some(sender);
        }
    }
    None
}

fn keep(key: PoolKey, sender: Sender) {
    let mut pool = pool().lock().unwrap_or_else(|e| e.into_inner());
    let senders = pool.entry(key).or_default();
    if senders.len() < IDLE_PER_ADDRESS {
        senders.push(sender);
    }
}

/// A new connection to the checked address (TLS to the URL's host name
/// for https), its driver running on its own task.
async fn connect(target: &Target) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(target.address).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    if target.https {
        let name = rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|e| e.to_string())?;
        let stream = tls_connector().connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
        handshake(hyper_util::rt::TokioIo::new(stream)).await
    } else {
        handshake(hyper_util::rt::TokioIo::new(stream)).await
    }
}

async fn handshake<I>(io: I) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The TLS client: the system's trusted roots, built once.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_not() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn checks_come_before_any_lookup() {
        let tenant = Egress { allow_hosts: None, allow_private: false };
        for url in
            ["http://127.0.0.1/hook", "http://10.0.0.1/x", "http://[::1]:8080/", "https://169.254.169.254/"]
        {
            assert_eq!(check_registration(url, &tenant, true).await.unwrap_err().code, REFUSED, "{url}");
            assert_eq!(resolve(url, &tenant, true).await.unwrap_err().code, REFUSED, "{url}");
        }
        // The panel may, and so may a tenant where the service allows it.
        assert!(check_registration("http://127.0.0.1:9/hook", &tenant, false).await.is_ok());
        let private = Egress { allow_private: true, ..Egress::default() };
        let target = resolve("http://127.0.0.1:9/hook?x=1", &private, true).await.unwrap();
        assert_eq!(
            (target.address, target.path_and_query.as_str()),
            ("127.0.0.1:9".parse().unwrap(), "/hook?x=1")
        );
        // An allowlist refuses other hosts by name, so their names are never
        // looked up (this one cannot resolve here: no network).
        let listed = Egress { allow_hosts: Some(vec!["127.0.0.1".into()]), allow_private: true };
        let error = resolve("https://hooks.example.com/x", &listed, false).await.unwrap_err();
        assert!(error.message.contains("allowed webhook hosts"), "{}", error.message);
        // The panel's endpoint is registered without a lookup.
        assert!(check_registration("https://hooks.example.com/x", &Egress::default(), false).await.is_ok());
        for bad in ["ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "not a url", "/relative"] {
            assert_eq!(check_registration(bad, &listed, false).await.unwrap_err().code, "malformed", "{bad}");
        }
    }
}
