//! Standard Webhooks signatures: a secret is `whsec_` + base64 of 32
//! random bytes; a delivery is signed `v1,` + base64 of HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>` under the secret's decoded
//! bytes; several signatures (during a rotation) are separated by spaces.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;
use ring::rand::SecureRandom;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 bytes from the system's random
/// source.
pub fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key bytes of a `whsec_` secret.
fn key_of(secret: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD.decode(encoded).map_err(|e| anyhow::anyhow!("a webhook secret is not base64: {e}"))
}

/// `v1,<base64 signature>` of one delivery under one secret.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_of(secret)?);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    Ok(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

/// The `webhook-signature` header: a signature under each secret, space
/// separated.
pub fn signature_header<'s>(
    secrets: impl IntoIterator<Item = &'s str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<String> {
    let signatures: Vec<String> =
        secrets.into_iter().map(|s| signature(s, id, timestamp, body)).collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!signatures.is_empty(), "an endpoint without a current secret cannot sign");
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference vector (its libraries' tests).
    #[test]
    fn signs_like_the_reference_libraries() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = signature_header([secret, secret], id, 1614265330, body).unwrap();
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn new_secrets_are_32_random_bytes() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(key_of(&a).unwrap().len(), 32);
        assert!(a.starts_with(SECRET_PREFIX));
    }
}
