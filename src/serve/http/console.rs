//! The console page (`GET /`, shipped inside the binary) and the security
//! headers every answer carries. The Content-Security-Policy allows no
//! script or style but the page's own inline blocks, by their SHA-256
//! hashes computed from the page itself, so an edit of the page can never
//! leave the policy behind, and no `unsafe-inline` is ever needed.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{Html, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The console: one HTML page with its CSS and JavaScript inline.
pub const PAGE: &str = include_str!("console.html");

/// `'sha256-<base64>'` for the contents of each `<tag>...</tag>` block of
/// the page, in order.
fn inline_hashes(tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    PAGE.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()))
        .map(|(content, _)| {
            format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(content)))
        })
        .collect()
}

/// The policy of every answer. Nothing loads but the page's own inline
/// script and style, calls to this server's API, and images from here or
/// `data:` URLs (the page's icon); no page may frame the console, and no
/// form submits anywhere (sign-in is handled by the script).
pub static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        inline_hashes("script").join(" "),
        inline_hashes("style").join(" "),
    );
    HeaderValue::from_str(&policy).expect("a policy of hashes and ASCII keywords")
});

/// Adds the security headers to an answer: the policy above, no framing
/// (for browsers that predate `frame-ancestors`), no content sniffing, and
/// no referrer leaving the console.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY.clone());
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /`: the console.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_one_hash_for_each_inline_block_and_nothing_unsafe() {
        assert_eq!(inline_hashes("script").len(), PAGE.matches("<script>").count());
        assert_eq!(inline_hashes("style").len(), PAGE.matches("<style>").count());
        assert_eq!(PAGE.matches("<script").count(), 1, "every script is the one inline block");
        let policy = CONTENT_SECURITY_POLICY.to_str().unwrap();
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }
}
