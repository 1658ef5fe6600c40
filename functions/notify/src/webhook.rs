//! Standard Webhooks signing and the address guard for webhook targets.
//!
//! A webhook carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under the secret), as the Standard Webhooks
//! specification defines them, so receivers can use its libraries to verify.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of Standard Webhooks secrets; the rest is the base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook signing key.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses a `whsec_`-prefixed base64 secret (the prefix is optional).
    ///
    /// # Errors
    ///
    /// A message when the text is not base64 or the key is shorter than 24 bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| {
                format!("WEBHOOK_SECRET is not base64 after the whsec_ prefix: {err}")
            })?;
        if key.len() < 24 {
            return Err(format!(
                "WEBHOOK_SECRET has a {}-byte key; use at least 24 random bytes",
                key.len()
            ));
        }
        Ok(WebhookSecret(key))
    }

    /// A new random 32-byte secret.
    pub fn generate() -> WebhookSecret {
        WebhookSecret(rand_bytes())
    }

    /// The secret in its `whsec_` text form, to give to receivers.
    pub fn to_text(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

fn rand_bytes() -> Vec<u8> {
    use std::io::Read;
    let mut key = vec![0u8; 32];
    // /dev/urandom is the kernel's CSPRNG; hmac's key needs no more.
    if let Ok(mut file) = std::fs::File::open("/dev/urandom")
        && file.read_exact(&mut key).is_ok()
    {
        return key;
    }
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .copied()
        .collect()
}

/// Whether a webhook may be sent to `address`. Loopback, private, link-local,
/// unique-local, shared, documentation, multicast and unspecified addresses are
/// refused unless `allow_private` is set.
pub fn address_allowed(address: IpAddr, allow_private: bool) -> bool {
    if allow_private {
        return !address.is_unspecified() && !address.is_multicast();
    }
    match address {
        IpAddr::V4(v4) => {
            let shared = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10)
                .expect("valid prefix");
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || shared.contains(&v4)
                || (v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_allowed(IpAddr::V4(v4), false);
            }
            let segments = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || segments[0] == 0x2001 && segments[1] == 0x0db8
                // 6to4 and NAT64 addresses embed an IPv4 address that may be private.
                || segments[0] == 0x2002
                || (segments[0] == 0x0064 && segments[1] == 0xff9b))
        }
    }
}

/// Reason a webhook target cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The guard refuses the URL or every address of its host; trying again
    /// cannot change that.
    Refused(String),
    /// The host could not be resolved now; a later attempt may succeed.
    Unresolved(String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::Refused(reason) | TargetError::Unresolved(reason) => f.write_str(reason),
        }
    }
}

/// Resolves `url`'s host within `timeout` and returns the addresses the
/// guard allows, in order.
///
/// # Errors
///
/// [`TargetError::Refused`] when the URL is not http or https, has no host,
/// or every address is refused; [`TargetError::Unresolved`] when the lookup
/// fails or takes longer than `timeout`.
pub async fn resolve_allowed(
    url: &url::Url,
    allow_private: bool,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, TargetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Refused(format!(
            "scheme {} is not http or https",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| TargetError::Refused("the URL has no host".to_owned()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| TargetError::Refused("the URL has no port".to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .ok()
        .map(|result| result.map(Iterator::collect));
    let addresses = lookup_addresses(host, lookup, timeout)?;
    let allowed: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|addr| address_allowed(addr.ip(), allow_private))
        .collect();
    if allowed.is_empty() {
        return Err(TargetError::Refused(format!(
            "{host} resolves only to addresses that webhooks may not reach (private, loopback or link-local); an operator can allow them with WEBHOOK_ALLOW_PRIVATE=true"
        )));
    }
    Ok(allowed)
}

/// Returns the addresses of a lookup of `host`, which is `None` when it took
/// longer than `timeout`. A failed or late lookup may succeed later.
fn lookup_addresses(
    host: &str,
    lookup: Option<std::io::Result<Vec<SocketAddr>>>,
    timeout: std::time::Duration,
) -> Result<Vec<SocketAddr>, TargetError> {
    match lookup {
        Some(Ok(addresses)) => Ok(addresses),
        Some(Err(err)) => Err(TargetError::Unresolved(format!(
            "cannot resolve {host}: {err}"
        ))),
        None => Err(TargetError::Unresolved(format!(
            "resolving {host} timed out after {} s",
            timeout.as_secs_f64()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn guard_refuses_internal_addresses() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            let address: IpAddr = text.parse().unwrap();
            assert!(!address_allowed(address, false), "{text} must be refused");
        }
        for text in ["93.184.215.14", "2606:4700::1111"] {
            let address: IpAddr = text.parse().unwrap();
            assert!(address_allowed(address, false), "{text} must be allowed");
        }
        assert!(address_allowed("127.0.0.1".parse().unwrap(), true));
    }

    #[tokio::test]
    async fn loopback_target_is_refused_by_default() {
        let url = url::Url::parse("http://127.0.0.1:9/hook").unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let err = resolve_allowed(&url, false, timeout).await.unwrap_err();
        assert!(matches!(err, TargetError::Refused(_)), "{err:?}");
        assert!(err.to_string().contains("WEBHOOK_ALLOW_PRIVATE"), "{err}");
        assert_eq!(resolve_allowed(&url, true, timeout).await.unwrap().len(), 1);
    }

    #[test]
    fn failed_or_late_lookup_may_be_tried_again() {
        let timeout = std::time::Duration::from_secs(10);
        let failed = std::io::Error::other("temporary failure in name resolution");
        for lookup in [Some(Err(failed)), None] {
            let err = lookup_addresses("hooks.example.com", lookup, timeout).unwrap_err();
            assert!(matches!(err, TargetError::Unresolved(_)), "{err:?}");
            assert!(err.to_string().contains("hooks.example.com"), "{err}");
        }
        let found = vec!["93.184.215.14:443".parse().unwrap()];
        assert_eq!(
            lookup_addresses("hooks.example.com", Some(Ok(found.clone())), timeout).unwrap(),
            found
        );
    }
}
