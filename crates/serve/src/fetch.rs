//! `{"image_url": ...}`: fetching an image for the client, which makes the server a proxy that
//! strangers can point at things, so it is off unless `image_url.enabled`, and then bounded:
//! only http(s) URLs to the hosts in `image_url.allowed_hosts`; only public addresses (no
//! private, loopback, link-local, multicast or otherwise reserved ranges), checked on the
//! addresses DNS returns — the connection uses exactly those, so a name cannot be re-pointed
//! between check and use — and again on every redirect; a size limit enforced while reading
//! and a time limit on the whole fetch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::ImageUrlConfig;
use crate::error::ApiError;

/// Fetches images by URL under the configured policy.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    client: reqwest::Client,
    policy: Arc<UrlPolicy>,
    max_bytes: usize,
}

/// Which URLs may be fetched.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    allowed_hosts: Vec<String>,
    allow_private_addresses: bool,
}

impl UrlPolicy {
    pub fn new(config: &ImageUrlConfig) -> UrlPolicy {
        UrlPolicy {
            allowed_hosts: config.allowed_hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect(),
            allow_private_addresses: config.allow_private_addresses,
        }
    }

    /// Checks a URL (the first one, and each redirect's target) before anything is sent.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("only http and https URLs are fetched, not {}:", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with credentials are not fetched".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("the URL has no host".into()),
        };
        if !self.host_allowed(&host) {
            return Err(format!("the host {host} is not in `image_url.allowed_hosts`"));
        }
        if let Some(ip) = literal_ip(url)
            && !self.address_allowed(ip)
        {
            return Err(format!("{ip} is not a public address; only public hosts are fetched"));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|allowed| {
            allowed == "*"
                || allowed == host
                || allowed.strip_prefix("*.").is_some_and(|domain| host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")))
        })
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private_addresses || is_public(ip)
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Whether `ip` is a globally routable unicast address (what an image host on the internet has).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            let first = segments[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (first == 0x2001 && segments[1] == 0x0db8) // documentation
                || (first == 0x0064 && segments[1] == 0xff9b) // NAT64: reaches IPv4 space
                || first == 0x2002 // 6to4: embeds an IPv4 address
                || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, cloud metadata among them
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240) // reserved
}

/// DNS through the system resolver, keeping only addresses the policy allows; the connection is
/// made to what this returns.
struct CheckedResolver {
    policy: Arc<UrlPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| policy.address_allowed(a.ip())).collect();
            if allowed.is_empty() {
                let shown: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                let message = if found.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves to {} only, not a public address; only public hosts are fetched", shown.join(", "))
                };
                return Err(message.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

impl ImageFetcher {
    pub fn new(config: &ImageUrlConfig) -> Result<ImageFetcher, String> {
        let policy = Arc::new(UrlPolicy::new(config));
        let redirect_policy = policy.clone();
        let max_redirects = config.max_redirects;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .dns_resolver(Arc::new(CheckedResolver { policy: policy.clone() }))
            // Proxies from the environment would bypass the address checks.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(format!("more than {max_redirects} redirects (`image_url.max_redirects`)"));
                }
                match redirect_policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(message) => {
                        let target = attempt.url().to_string();
                        attempt.error(format!("redirected to {target}: {message}"))
                    }
                }
            }))
            .user_agent(concat!("caption-serve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up image_url fetching: {e}"))?;
        Ok(ImageFetcher { client, policy, max_bytes: config.max_bytes })
    }

    /// The image at `url`, or why not: 422 for a refused or failed fetch, 413 over the size
    /// limit.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, ApiError> {
        let refused = |message: String| ApiError::unprocessable(format!("image_url {url}: {message}"));
        let parsed = Url::parse(url).map_err(|e| refused(format!("not a URL: {e}")))?;
        self.policy.check(&parsed).map_err(refused)?;
        let mut response = self.client.get(parsed).send().await.map_err(|e| refused(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(format!("the server answered {status}")));
        }
        let too_large = || ApiError::too_large(format!("image_url {url}: over {} bytes (`image_url.max_bytes`)", self.max_bytes));
        if response.content_length().is_some_and(|length| length > self.max_bytes as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| refused(describe(&e)))? {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The error and its causes in one line (reqwest's own message alone says little).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out (`image_url.timeout_ms`)".into();
    }
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> UrlPolicy {
        let config = ImageUrlConfig { enabled: true, allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(), ..Default::default() };
        UrlPolicy::new(&config)
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.215.14", "8.8.8.8", "151.101.1.69", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_host_and_literal_addresses() {
        let policy = policy(&["images.example.org", "*.cdn.example.net", "93.184.215.14"]);
        let check = |url: &str| policy.check(&Url::parse(url).unwrap());
        assert!(check("https://images.example.org/cat.jpg").is_ok());
        assert!(check("http://IMAGES.example.org./cat.jpg").is_ok());
        assert!(check("https://a.b.cdn.example.net/x.png").is_ok());
        assert!(check("http://93.184.215.14/x.png").is_ok());
        assert!(check("https://cdn.example.net/x.png").unwrap_err().contains("allowed_hosts"));
        assert!(check("https://evilcdn.example.net/x.png").unwrap_err().contains("allowed_hosts"));
        assert!(check("https://images.example.org.evil.com/x").unwrap_err().contains("allowed_hosts"));
        assert!(check("file:///etc/passwd").unwrap_err().contains("only http and https"));
        assert!(check("ftp://images.example.org/x").unwrap_err().contains("only http and https"));
        assert!(check("https://user:pw@images.example.org/x").unwrap_err().contains("credentials"));

        let any = super::UrlPolicy::new(&ImageUrlConfig { enabled: true, allowed_hosts: vec!["*".into()], ..Default::default() });
        let check = |url: &str| any.check(&Url::parse(url).unwrap());
        assert!(check("https://anything.example/x").is_ok());
        for blocked in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1:8080/",
            "http://[::ffff:192.168.0.1]/",
        ] {
            assert!(check(blocked).unwrap_err().contains("not a public address"), "{blocked}");
        }
    }
}
