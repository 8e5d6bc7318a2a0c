//! Connecting to nats-server, with the credentials a URL carries.
//!
//! async-nats 0.51 parses `nats://user:password@host:port` but does not send
//! the user and password it finds there, so they are taken out of the URL
//! here and passed as options. The URL's other parts are kept as they are.

use std::time::Duration;

/// Splits `scheme://user:password@rest` into the URL without credentials
/// and the credentials (percent-encoding is not decoded: ids and passwords
/// of the shipped configuration are plain).
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (format!("{scheme}{host}"), Some((user.to_string(), password.to_string())))
        }
        None => (url.to_string(), None),
    }
}

/// Connection options for `url`'s credentials, with a name shown by the
/// server's monitoring and an inbox prefix the credential may subscribe to.
/// `url` may list several servers of a cluster, separated by commas
/// (`nats://a:4222,nats://b:4222`); the client connects to any of them and
/// moves to another when one fails. The credentials are the first found.
pub fn options(
    url: &str,
    name: &str,
    inbox_prefix: Option<&str>,
) -> (Vec<String>, async_nats::ConnectOptions) {
    let mut addresses = Vec::new();
    let mut credentials = None;
    for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (address, found) = split_credentials(one);
        addresses.push(address);
        credentials = credentials.or(found);
    }
    let mut options = async_nats::ConnectOptions::new().name(name).connection_timeout(Duration::from_secs(5));
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user, password);
    }
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    (addresses, options)
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn a_cluster_url_lists_every_server() {
        let (addresses, _) = super::options("nats://u:p@a:1, nats://b:2,", "t", None);
        assert_eq!(addresses, ["nats://a:1", "nats://b:2"]);
    }

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), ("nats://127.0.0.1:4222".into(), None));
        assert_eq!(
            split_credentials("nats://acme-user:s3cret@127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".into(), Some(("acme-user".into(), "s3cret".into())))
        );
        assert_eq!(
            split_credentials("ledger:pw@localhost"),
            ("localhost".into(), Some(("ledger".into(), "pw".into())))
        );
    }
}

/// One request, as `async_nats::Client::request`, except that it ends at
/// once when the connection is made again while it waits: a request that
/// went out on a connection that then dropped is never answered (its reply,
/// if any, went to the old connection), and waiting out the request timeout
/// would leave the caller with no answer for that long. The caller sends it
/// again (with the same idempotency key, so it is decided once).
pub async fn request(
    nats: &async_nats::Client,
    subject: String,
    payload: bytes::Bytes,
) -> Result<async_nats::Message, String> {
    use std::sync::atomic::Ordering;
    let statistics = nats.statistics();
    let connects = statistics.connects.load(Ordering::Relaxed);
    let request = nats.request(subject, payload);
    tokio::pin!(request);
    loop {
        tokio::select! {
            reply = &mut request => return reply.map_err(|e| e.to_string()),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if statistics.connects.load(Ordering::Relaxed) != connects {
                    return Err("the connection to nats-server was made again with the request in flight".into());
                }
            }
        }
    }
}
