//! The SSRF guard: which addresses a destination may reach, checked when a destination is
//! saved and again on every connection.
//!
//! A destination's endpoint is chosen by a customer and fetched by the control plane, so an
//! endpoint that points at the control plane's own network (loopback, private ranges,
//! link-local, a cloud metadata service) would let a customer probe or talk to it. The
//! deployment's [`Policy`] says which of those classes are allowed (none by default; tests allow
//! loopback). Unspecified, multicast, broadcast, reserved and documentation addresses are never
//! allowed.
//!
//! Checking the name once at save time is not enough: a name can resolve to a public address
//! then and to `127.0.0.1` a second later (DNS rebinding). So the S3 client's connector resolves
//! every name through [`GuardedResolver`], which refuses any answer holding a forbidden address,
//! and IP-literal endpoints (which a connector never resolves) are checked whenever a client is
//! built. The resolver underneath is injectable, so tests can script DNS answers.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};

/// A class of addresses a deployment may allow destinations to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), carrier-grade NAT 100.64/10, benchmarking
    /// 198.18/15, IETF 192.0.0/24, unique-local fc00::/7.
    Private,
    /// 169.254/16 and fe80::/10 (except the metadata addresses).
    LinkLocal,
    /// Cloud instance metadata services: 169.254.169.254, 169.254.170.2, 100.100.100.200,
    /// 192.0.0.192, fd00:ec2::254. Allowing link_local or private does not allow these.
    Metadata,
}

impl AddressClass {
    /// Every class.
    pub const ALL: [AddressClass; 4] = [
        AddressClass::Loopback,
        AddressClass::Private,
        AddressClass::LinkLocal,
        AddressClass::Metadata,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link_local",
            AddressClass::Metadata => "metadata",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an address is, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A globally reachable address: always allowed.
    Public,
    /// In a class the policy may allow.
    Guarded(AddressClass),
    /// Never a destination: unspecified, multicast, broadcast, reserved or documentation.
    Never(&'static str),
}

const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Classified {
    use Classified::*;
    if METADATA_V4.contains(&ip) {
        return Guarded(AddressClass::Metadata);
    }
    if ip.is_unspecified() || in_v4(ip, [0, 0, 0, 0], 8) {
        return Never("unspecified");
    }
    if ip.is_broadcast() {
        return Never("broadcast");
    }
    if ip.is_multicast() {
        return Never("multicast");
    }
    if in_v4(ip, [240, 0, 0, 0], 4) {
        return Never("reserved");
    }
    if in_v4(ip, [192, 0, 2, 0], 24)
        || in_v4(ip, [198, 51, 100, 0], 24)
        || in_v4(ip, [203, 0, 113, 0], 24)
    {
        return Never("documentation");
    }
    if ip.is_loopback() {
        return Guarded(AddressClass::Loopback);
    }
    if ip.is_link_local() {
        return Guarded(AddressClass::LinkLocal);
    }
    if ip.is_private()
        || in_v4(ip, [100, 64, 0, 0], 10)
        || in_v4(ip, [198, 18, 0, 0], 15)
        || in_v4(ip, [192, 0, 0, 0], 24)
    {
        return Guarded(AddressClass::Private);
    }
    Public
}

fn classify_v6(ip: Ipv6Addr) -> Classified {
    use Classified::*;
    if METADATA_V6.contains(&ip) {
        return Guarded(AddressClass::Metadata);
    }
    // Addresses that embed an IPv4 address reach that address: IPv4-mapped (::ffff:0:0/96),
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    if ip.is_unspecified() {
        return Never("unspecified");
    }
    if ip.is_multicast() {
        return Never("multicast");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Never("documentation");
    }
    if ip.is_loopback() {
        return Guarded(AddressClass::Loopback);
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Guarded(AddressClass::LinkLocal);
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Guarded(AddressClass::Private);
    }
    // Deprecated IPv4-compatible addresses (::a.b.c.d) and site-local fec0::/10.
    if s[..6] == [0, 0, 0, 0, 0, 0] || (s[0] & 0xffc0) == 0xfec0 {
        return Never("reserved");
    }
    Public
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> Classified {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// A destination the guard refuses: the request field it comes from (`endpoint` or `path`) and
/// the rule it breaks. Rendered `<field> <rule>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct Refused {
    /// `endpoint` (S3) or `path` (local).
    pub field: &'static str,
    /// What is wrong.
    pub rule: String,
}

impl Refused {
    fn endpoint(rule: impl Into<String>) -> Self {
        Self {
            field: "endpoint",
            rule: rule.into(),
        }
    }

    fn path(rule: impl Into<String>) -> Self {
        Self {
            field: "path",
            rule: rule.into(),
        }
    }
}

/// An endpoint failed its check: refused by the policy, or its name does not resolve (an
/// unreachable destination, not a forbidden one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The policy refuses it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The host name does not resolve.
    #[error("endpoint host {host} does not resolve")]
    Unresolved {
        /// The name.
        host: String,
    },
}

/// The deployment's rules for destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Address classes endpoints may reach (none by default).
    pub allow: BTreeSet<AddressClass>,
    /// Directories local destinations must lie under; empty means local destinations are
    /// refused. Absolute and normalised (checked by [`Policy::new`]).
    pub local_roots: Vec<PathBuf>,
}

impl Policy {
    /// A policy allowing `allow` and local destinations under `local_roots`. Each root must be
    /// absolute and normalised; the error names the offending root.
    pub fn new(
        allow: impl IntoIterator<Item = AddressClass>,
        local_roots: Vec<PathBuf>,
    ) -> Result<Self, String> {
        for root in &local_roots {
            normalised_absolute(root).map_err(|rule| format!("{} {rule}", root.display()))?;
        }
        Ok(Self {
            allow: allow.into_iter().collect(),
            local_roots,
        })
    }

    /// Whether the policy lets a destination reach `ip`; the error says why not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            Classified::Public => Ok(()),
            Classified::Guarded(class) if self.allow.contains(&class) => Ok(()),
            Classified::Guarded(class) => Err(format!(
                "{ip} is a {} address, which this deployment does not allow (scheduling.ssrf_allow)",
                class.as_str().replace('_', "-")
            )),
            Classified::Never(kind) => Err(format!(
                "{ip} is a {kind} address, never allowed as a destination"
            )),
        }
    }
}

/// Checks that `path` is absolute and normalised (no `.`, `..` or empty components).
fn normalised_absolute(path: &Path) -> Result<(), &'static str> {
    if !path.is_absolute() {
        return Err("must be an absolute path");
    }
    let text = path.to_string_lossy();
    if text.contains("//") || (text.len() > 1 && text.ends_with('/')) {
        return Err("must be normalised (no empty components or trailing /)");
    }
    for c in path.components() {
        match c {
            Component::RootDir | Component::Normal(_) => {}
            Component::ParentDir => return Err("must not contain .."),
            Component::CurDir | Component::Prefix(_) => {
                return Err("must be normalised (no . components)");
            }
        }
    }
    // `Path::components` drops interior `.` silently; look at the text too.
    if text.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("must not contain . or .. components");
    }
    Ok(())
}

/// The system resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl ResolveDns for SystemResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let addrs = tokio::net::lookup_host((name, 0))
                .await
                .map_err(ResolveDnsError::new)?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// The guard: a [`Policy`] and the resolver names go through.
#[derive(Debug, Clone)]
pub struct Guard {
    policy: Arc<Policy>,
    resolver: Arc<dyn ResolveDns>,
}

impl Guard {
    /// A guard resolving names with the system resolver.
    pub fn new(policy: Policy) -> Self {
        Self::with_resolver(policy, SystemResolver)
    }

    /// A guard resolving names with `resolver` (tests script DNS answers with it).
    pub fn with_resolver(policy: Policy, resolver: impl ResolveDns + 'static) -> Self {
        Self {
            policy: Arc::new(policy),
            resolver: Arc::new(resolver),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Resolves `name` and refuses it unless every address is allowed.
    async fn check_name(&self, name: &str) -> Result<Vec<IpAddr>, EndpointError> {
        let unresolved = || EndpointError::Unresolved {
            host: name.to_owned(),
        };
        let addrs = self
            .resolver
            .resolve_dns(name)
            .await
            .map_err(|_| unresolved())?;
        if addrs.is_empty() {
            return Err(unresolved());
        }
        for ip in &addrs {
            self.policy.check_ip(*ip).map_err(|rule| {
                EndpointError::Refused(Refused::endpoint(format!("host {name} resolves to {rule}")))
            })?;
        }
        Ok(addrs)
    }

    /// Checks an endpoint's host: an IP literal against the policy, a name by resolving it now.
    pub async fn check_endpoint(&self, endpoint: &url::Url) -> Result<(), EndpointError> {
        match endpoint.host() {
            None => Err(Refused::endpoint("must name a host").into()),
            Some(url::Host::Ipv4(ip)) => Ok(self.check_literal(IpAddr::V4(ip))?),
            Some(url::Host::Ipv6(ip)) => Ok(self.check_literal(IpAddr::V6(ip))?),
            Some(url::Host::Domain(name)) => self.check_name(name).await.map(|_| ()),
        }
    }

    /// Checks an IP-literal endpoint host, which no connector resolves: called whenever a
    /// client is built, not only at save time.
    pub(crate) fn check_literal(&self, ip: IpAddr) -> Result<(), Refused> {
        self.policy.check_ip(ip).map_err(Refused::endpoint)
    }

    /// Checks a local destination's path: absolute, normalised, and under a configured root.
    pub fn check_local_path(&self, path: &Path) -> Result<(), Refused> {
        normalised_absolute(path).map_err(Refused::path)?;
        if self.policy.local_roots.is_empty() {
            return Err(Refused::path(
                "is a local destination, which this deployment does not allow (scheduling.local_roots is empty)",
            ));
        }
        if !self.policy.local_roots.iter().any(|r| path.starts_with(r)) {
            return Err(Refused::path(
                "must lie under one of the deployment's local roots (scheduling.local_roots)",
            ));
        }
        Ok(())
    }

    /// The resolver the S3 client's connector uses: every answer checked at connect time.
    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            guard: self.clone(),
        }
    }
}

/// A [`ResolveDns`] that refuses any name resolving to an address the policy does not allow.
/// The refusal travels as the lookup's error, so the connection is never opened.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Guard,
}

impl ResolveDns for GuardedResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            self.guard.check_name(name).await.map_err(|e| match e {
                EndpointError::Refused(refused) => {
                    tracing::warn!(host = name, rule = %refused.rule, "refused a destination connection");
                    ResolveDnsError::new(refused)
                }
                unresolved @ EndpointError::Unresolved { .. } => ResolveDnsError::new(unresolved),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[AddressClass]) -> Policy {
        Policy::new(allow.iter().copied(), vec![]).unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        use AddressClass::*;
        use Classified::*;
        let cases: &[(&str, Classified)] = &[
            ("8.8.8.8", Public),
            ("2606:4700::1111", Public),
            ("127.0.0.1", Guarded(Loopback)),
            ("127.8.9.10", Guarded(Loopback)),
            ("::1", Guarded(Loopback)),
            ("::ffff:127.0.0.1", Guarded(Loopback)),
            ("10.0.0.1", Guarded(Private)),
            ("172.16.5.4", Guarded(Private)),
            ("172.31.255.255", Guarded(Private)),
            ("192.168.1.1", Guarded(Private)),
            ("100.64.0.1", Guarded(Private)),
            ("198.18.0.1", Guarded(Private)),
            ("fd12:3456::1", Guarded(Private)),
            ("::ffff:10.1.2.3", Guarded(Private)),
            ("64:ff9b::a00:1", Guarded(Private)),
            ("2002:a00:1::", Guarded(Private)),
            ("169.254.1.1", Guarded(LinkLocal)),
            ("fe80::1", Guarded(LinkLocal)),
            ("169.254.169.254", Guarded(Metadata)),
            ("::ffff:169.254.169.254", Guarded(Metadata)),
            ("169.254.170.2", Guarded(Metadata)),
            ("100.100.100.200", Guarded(Metadata)),
            ("fd00:ec2::254", Guarded(Metadata)),
            ("0.0.0.0", Never("unspecified")),
            ("0.1.2.3", Never("unspecified")),
            ("::", Never("unspecified")),
            ("255.255.255.255", Never("broadcast")),
            ("224.0.0.1", Never("multicast")),
            ("ff02::1", Never("multicast")),
            ("240.0.0.1", Never("reserved")),
            ("192.0.2.1", Never("documentation")),
            ("2001:db8::1", Never("documentation")),
        ];
        for (ip, expected) in cases {
            assert_eq!(classify(ip.parse().unwrap()), *expected, "{ip}");
        }
        assert!(!in_v4(Ipv4Addr::new(172, 32, 0, 1), [172, 16, 0, 0], 12));
    }

    #[test]
    fn the_policy_allows_only_public_addresses_and_the_classes_it_names() {
        let none = policy(&[]);
        assert!(none.check_ip("8.8.8.8".parse().unwrap()).is_ok());
        for ip in ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "fe80::1"] {
            assert!(none.check_ip(ip.parse().unwrap()).is_err(), "{ip}");
        }
        let everything_but_metadata = policy(&[
            AddressClass::Loopback,
            AddressClass::Private,
            AddressClass::LinkLocal,
        ]);
        for ip in ["127.0.0.1", "10.0.0.1", "169.254.1.1", "fe80::1"] {
            assert!(
                everything_but_metadata
                    .check_ip(ip.parse().unwrap())
                    .is_ok()
            );
        }
        let err = everything_but_metadata
            .check_ip("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            "169.254.169.254 is a metadata address, which this deployment does not allow (scheduling.ssrf_allow)"
        );
        let all = policy(&AddressClass::ALL);
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::"] {
            let err = all.check_ip(ip.parse().unwrap()).unwrap_err();
            assert!(err.ends_with("never allowed as a destination"), "{err}");
        }
    }

    #[test]
    fn local_paths_must_be_absolute_normalised_and_under_a_root() {
        let guard = Guard::new(Policy::new([], vec!["/srv/backups".into()]).unwrap());
        assert!(guard.check_local_path(Path::new("/srv/backups")).is_ok());
        assert!(
            guard
                .check_local_path(Path::new("/srv/backups/acme"))
                .is_ok()
        );
        for (bad, rule) in [
            ("backups/acme", "path must be an absolute path"),
            ("/srv/backups/../etc", "path must not contain .."),
            (
                "/srv/backups/./x",
                "path must not contain . or .. components",
            ),
            ("/srv/backups//x", "path must be normalised"),
            ("/srv/backups-evil", "path must lie under one of"),
            ("/etc", "path must lie under one of"),
        ] {
            let err = guard.check_local_path(Path::new(bad)).unwrap_err();
            assert!(err.to_string().starts_with(rule), "{bad}: {err}");
        }
        let no_roots = Guard::new(Policy::default());
        let err = no_roots
            .check_local_path(Path::new("/srv/backups"))
            .unwrap_err();
        assert!(err.rule.contains("does not allow"), "{err}");
        assert!(Policy::new([], vec!["relative".into()]).is_err());
        assert!(Policy::new([], vec!["/a/../b".into()]).is_err());
    }

    #[tokio::test]
    async fn endpoints_are_checked_by_literal_and_by_resolution() {
        let guard = Guard::new(policy(&[]));
        for endpoint in [
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
            "http://169.254.169.254/",
            "http://10.0.0.1/",
            "http://localhost:9000",
        ] {
            let err = guard
                .check_endpoint(&endpoint.parse().unwrap())
                .await
                .unwrap_err();
            let EndpointError::Refused(err) = err else {
                panic!("{endpoint}: {err}")
            };
            assert_eq!(err.field, "endpoint", "{endpoint}");
        }
        let loopback = Guard::new(policy(&[AddressClass::Loopback]));
        loopback
            .check_endpoint(&"http://localhost:9000".parse().unwrap())
            .await
            .unwrap();
        let err = loopback
            .check_endpoint(&"http://169.254.169.254/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
    }
}
