//! The egress policy. Every address a customer supplies — a source URL, a webhook URL, a
//! bucket's custom endpoint — is a way into the operator's network, so every connection to one
//! passes this one policy first: IP literals (in any notation the URL standard accepts: `url`
//! turns `2130706433`, `0x7f.1` and `0177.0.0.1` into 127.0.0.1), every address a name resolves
//! to, and every redirect hop. Only public unicast addresses are allowed, plus exactly the
//! networks and host names an operator lists in `[egress]` (nothing wider).
//!
//! Adapters plug the policy into the HTTP clients that connect: [`ReqwestResolver`] and
//! [`redirect_policy`] for reqwest (sources, webhooks), [`SmithyResolver`] for the S3 SDK.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

/// `[egress]` settings, shared by the API and the worker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// Networks (CIDR) allowed beyond the public internet, e.g. `10.20.0.0/16` for a private
    /// MinIO, `127.0.0.0/8` for development.
    #[serde(default)]
    pub allowed_networks: Vec<IpNet>,
    /// Host names allowed whatever they resolve to, e.g. `minio.storage.svc.cluster.local`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// The policy, cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
}

/// A connection the policy refuses, naming the host as the customer wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{host}` is a private, loopback, link-local or otherwise internal address, which this deployment does not connect to"
)]
pub struct Forbidden {
    pub host: String,
}

/// Why an address could not be checked before connecting.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("`{host}` could not be resolved")]
    Unresolvable { host: String },
    #[error("the address has no host")]
    NoHost,
}

impl EgressPolicy {
    pub fn new(settings: &EgressSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                networks: settings.allowed_networks.iter().map(IpNet::trunc).collect(),
                hosts: settings
                    .allowed_hosts
                    .iter()
                    .map(|h| normalize_host(h))
                    .collect(),
            }),
        }
    }

    /// The policy with nothing allowed beyond public addresses (production's default).
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Whether connecting to `ip` is allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.inner.networks.iter().any(|n| n.contains(&ip))
    }

    /// Whether the operator listed this host name (then whatever it resolves to is allowed).
    pub fn allows_host_name(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.inner.hosts.contains(&host)
    }

    /// Checks what can be checked without resolving: an IP-literal host. A name passes here and
    /// is checked when it is resolved ([`Self::resolve`]).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Forbidden> {
        let forbidden = || Forbidden {
            host: url.host_str().unwrap_or_default().to_owned(),
        };
        match url.host() {
            Some(url::Host::Ipv4(v4)) if !self.allows_ip(IpAddr::V4(v4)) => Err(forbidden()),
            Some(url::Host::Ipv6(v6)) if !self.allows_ip(IpAddr::V6(v6)) => Err(forbidden()),
            Some(_) => Ok(()),
            None => Err(forbidden()),
        }
    }

    /// Checks a URL completely before anything connects to it: its literal, or every address its
    /// name resolves to now. For refusing an address in plain words when it is configured; the
    /// connection itself is checked again (names can resolve differently later).
    pub async fn check_url_now(&self, url: &url::Url) -> Result<(), CheckError> {
        self.check_url(url)?;
        match url.host() {
            Some(url::Host::Domain(name)) => self.resolve(name).await.map(|_| ()),
            Some(_) => Ok(()),
            None => Err(CheckError::NoHost),
        }
    }

    /// Resolves a name and keeps the addresses the policy allows; refuses the name when none is
    /// left, so a name that points inside the network fails like a literal would.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, CheckError> {
        let unresolvable = || CheckError::Unresolvable {
            host: name.to_owned(),
        };
        // A literal inside brackets or not (the S3 SDK may hand one over): no lookup.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if self.allows_ip(ip) {
                Ok(vec![ip])
            } else {
                Err(Forbidden {
                    host: name.to_owned(),
                }
                .into())
            };
        }
        let resolved: Vec<IpAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(|_| unresolvable())?
            .map(|a: SocketAddr| a.ip())
            .collect();
        if resolved.is_empty() {
            return Err(unresolvable());
        }
        if self.allows_host_name(name) {
            return Ok(resolved);
        }
        let allowed: Vec<IpAddr> = resolved
            .into_iter()
            .filter(|ip| self.allows_ip(*ip))
            .collect();
        if allowed.is_empty() {
            return Err(Forbidden {
                host: name.to_owned(),
            }
            .into());
        }
        Ok(allowed)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// IPv4 written as IPv6 (mapped `::ffff:a.b.c.d`) is the IPv4 address for every check.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata lives there
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Forms that carry an IPv4 address a gateway may route to: judged by that address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7])); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2])); // 6to4 2002::/16
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7, incl. AWS's fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0000) // Teredo
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only 100::/64
}

/// Whether `err`, anywhere in its chain, is the policy refusing an address.
pub fn is_forbidden(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<Forbidden>() {
            return true;
        }
        if let Some(CheckError::Forbidden(_)) = e.downcast_ref::<CheckError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// reqwest's resolver under the policy.
#[derive(Debug, Clone)]
pub struct ReqwestResolver(pub EgressPolicy);

impl reqwest::dns::Resolve for ReqwestResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addresses = policy
                .resolve(name.as_str())
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addresses: reqwest::dns::Addrs =
                Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}

/// A redirect policy that follows at most `max` hops and refuses a hop to a forbidden literal
/// (names on a hop go through the resolver like the first request's).
pub fn redirect_policy(policy: EgressPolicy, max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= max {
            return attempt.error(format!("more than {max} redirects"));
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(forbidden) => attempt.error(forbidden),
        }
    })
}

/// A reqwest client builder with the policy on every connection: the resolver and the
/// redirect check. Callers still check the first URL's literal ([`EgressPolicy::check_url`]):
/// reqwest does not resolve literals.
pub fn reqwest_builder(policy: &EgressPolicy, max_redirects: usize) -> reqwest::ClientBuilder {
    let redirects = if max_redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        redirect_policy(policy.clone(), max_redirects)
    };
    reqwest::Client::builder()
        .dns_resolver(ReqwestResolver(policy.clone()))
        .redirect(redirects)
}

/// The S3 SDK's resolver under the policy (its HTTP client skips resolution for literals, which
/// the storage crate checks on the endpoint before building a client).
#[derive(Debug, Clone)]
pub struct SmithyResolver(pub EgressPolicy);

impl aws_smithy_runtime_api::client::dns::ResolveDns for SmithyResolver {
    fn resolve_dns<'a>(
        &'a self,
        name: &'a str,
    ) -> aws_smithy_runtime_api::client::dns::DnsFuture<'a> {
        aws_smithy_runtime_api::client::dns::DnsFuture::new(async move {
            self.0
                .resolve(name)
                .await
                .map_err(aws_smithy_runtime_api::client::dns::ResolveDnsError::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        s.parse().expect("a URL")
    }

    #[test]
    fn internal_addresses_of_every_class_are_refused() {
        let policy = EgressPolicy::public_only();
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "::127.0.0.1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
        ] {
            assert!(
                !policy.allows_ip(ip.parse().unwrap()),
                "{ip} must be refused"
            );
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = EgressPolicy::public_only();
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(
                policy.allows_ip(ip.parse().unwrap()),
                "{ip} must be allowed"
            );
        }
    }

    #[test]
    fn ip_literals_in_every_notation_are_refused() {
        let policy = EgressPolicy::public_only();
        for literal in [
            "http://127.0.0.1:8080/x",
            "https://127.0.0.2:18990/x",
            "https://2130706434:18997/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://[::1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
        ] {
            assert!(
                policy.check_url(&url(literal)).is_err(),
                "{literal} must be refused"
            );
        }
        assert!(policy.check_url(&url("https://93.184.216.34/x")).is_ok());
        assert!(policy.check_url(&url("https://example.com/x")).is_ok());
    }

    #[test]
    fn an_allowed_network_opens_exactly_that_network() {
        let policy = EgressPolicy::new(&EgressSettings {
            allowed_networks: vec!["10.20.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
            allowed_hosts: vec![],
        });
        assert!(policy.allows_ip("10.20.3.4".parse().unwrap()));
        assert!(policy.allows_ip("::ffff:10.20.3.4".parse().unwrap()));
        assert!(policy.allows_ip("::1".parse().unwrap()));
        assert!(!policy.allows_ip("10.21.0.1".parse().unwrap()));
        assert!(!policy.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows_ip("169.254.169.254".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_the_operator_lists_it() {
        let policy = EgressPolicy::public_only();
        let err = policy.resolve("localhost").await.unwrap_err();
        assert!(matches!(err, CheckError::Forbidden(_)), "{err}");
        assert!(is_forbidden(&err));
        assert!(
            policy
                .check_url_now(&url("http://localhost:9/x"))
                .await
                .is_err()
        );

        let listed = EgressPolicy::new(&EgressSettings {
            allowed_networks: vec![],
            allowed_hosts: vec!["LocalHost.".into()],
        });
        let addresses = listed.resolve("localhost").await.expect("listed host");
        assert!(addresses.iter().all(|ip| ip.is_loopback()), "{addresses:?}");
        assert!(
            listed
                .check_url_now(&url("http://localhost:9/x"))
                .await
                .is_ok()
        );
        // Listing a name does not open the addresses behind it to other names or literals.
        assert!(listed.check_url(&url("http://127.0.0.1:9/x")).is_err());
    }

    #[tokio::test]
    async fn literals_handed_to_the_resolver_are_checked_too() {
        let policy = EgressPolicy::public_only();
        assert!(policy.resolve("127.0.0.1").await.is_err());
        assert!(policy.resolve("[::1]").await.is_err());
        assert_eq!(
            policy.resolve("1.1.1.1").await.unwrap(),
            vec!["1.1.1.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn settings_read_networks_and_hosts() {
        let settings: EgressSettings = serde_json::from_str(
            r#"{"allowed_networks": ["127.0.0.0/8", "fd12::/16"], "allowed_hosts": ["minio.internal"]}"#,
        )
        .unwrap();
        assert_eq!(settings.allowed_networks.len(), 2);
        assert!(
            serde_json::from_str::<EgressSettings>(r#"{"allowed_networks": ["nope"]}"#).is_err()
        );
        assert!(serde_json::from_str::<EgressSettings>(r#"{"allow_all": true}"#).is_err());
    }
}
