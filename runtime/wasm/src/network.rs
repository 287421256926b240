//! Where a plugin granted the network may connect.
//!
//! A plugin's network grant is checked per address, when it connects or
//! sends a datagram (`WasiCtxBuilder::socket_addr_check`). Loopback,
//! link-local (169.254.0.0/16, where cloud metadata services answer;
//! fe80::/10) and unspecified addresses (0.0.0.0, which reaches this
//! machine) are never reached through a general grant: they must be
//! listed by name. That keeps a plugin from the admin endpoint and from
//! the instance's credentials.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Addresses no grant reaches, however it is written: the admin endpoint's
/// (a plugin that could deploy plugins could drop every change). Kept for
/// the process, as the endpoint is.
static FORBIDDEN: std::sync::RwLock<Vec<SocketAddr>> = std::sync::RwLock::new(Vec::new());

/// Puts `addr` out of every plugin's reach. An unspecified address
/// (`0.0.0.0:9187`, listening on every interface) forbids its port on
/// every address, since a plugin could reach this machine under any of
/// its addresses.
pub fn forbid_address(addr: SocketAddr) {
    let mut forbidden = FORBIDDEN.write().unwrap_or_else(|e| e.into_inner());
    if !forbidden.contains(&addr) {
        forbidden.push(addr);
    }
}

fn is_forbidden(ip: IpAddr, port: u16) -> bool {
    let forbidden = FORBIDDEN.read().unwrap_or_else(|e| e.into_inner());
    forbidden
        .iter()
        .any(|f| f.port() == port && (f.ip().is_unspecified() || canonical(f.ip()) == ip))
}

/// What network access a plugin has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkGrant {
    /// None: a component importing `wasi:sockets` is refused at load.
    #[default]
    None,
    /// Any address except loopback, link-local and unspecified ones
    /// (`network = true`).
    Public,
    /// Only the listed hosts and networks (`network = ["10.0.0.0/8",
    /// "api.example.com:443"]`). Loopback and link-local addresses are
    /// reached only when a rule names them (`127.0.0.1:8080`,
    /// `169.254.169.254`), not through a wider range such as `0.0.0.0/0`.
    Only(Vec<NetworkRule>),
}

impl NetworkGrant {
    /// Whether the plugin may use `wasi:sockets` at all.
    pub fn is_granted(&self) -> bool {
        !matches!(self, NetworkGrant::None)
    }

    /// Whether the plugin may connect (or send datagrams) to `addr`.
    /// Host name rules are resolved now, so a name whose addresses change
    /// is followed; the lookup runs on a blocking thread.
    pub(crate) async fn allows(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if self.is_granted() && is_forbidden(ip, addr.port()) {
            tracing::warn!(%addr, "a plugin tried to reach the admin endpoint; refused");
            return false;
        }
        match self {
            NetworkGrant::None => false,
            NetworkGrant::Public => reserved_prefix(ip).is_none(),
            NetworkGrant::Only(rules) => {
                if rules.iter().any(|r| r.allows_literally(ip, addr.port())) {
                    return true;
                }
                for rule in rules {
                    if let Target::Host(host) = &rule.target
                        && rule.port.is_none_or(|p| p == addr.port())
                        && name_may_reach(host, ip)
                        && resolves_to(host.clone(), ip).await
                    {
                        return true;
                    }
                }
                false
            }
        }
    }
}

/// Whether a host name rule may lead to `ip` at all. Whoever runs a name's
/// DNS must not steer a plugin to this machine or a metadata service, so
/// reserved addresses are reached through a name only if it is `localhost`.
fn name_may_reach(host: &str, ip: IpAddr) -> bool {
    reserved_prefix(ip).is_none() || host.eq_ignore_ascii_case("localhost")
}

/// Whether `host` has `ip` among its addresses.
async fn resolves_to(host: String, ip: IpAddr) -> bool {
    let lookup = tokio::task::spawn_blocking(move || {
        (host.as_str(), 0)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| canonical(a.ip())).collect::<Vec<_>>())
    });
    match lookup.await {
        Ok(Ok(addrs)) => addrs.contains(&ip),
        Ok(Err(e)) => {
            tracing::debug!("resolving a granted host failed: {e}");
            false
        }
        Err(_) => false,
    }
}

/// One entry of a network allow-list: an address, a network (CIDR) or a
/// host name, each with an optional port.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkRule {
    target: Target,
    /// `None`: any port.
    port: Option<u16>,
    /// As written, for messages.
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Network { base: IpAddr, prefix: u8 },
    Host(String),
}

impl NetworkRule {
    /// Whether an address rule admits `ip:port` (`ip` canonical).
    fn allows_literally(&self, ip: IpAddr, port: u16) -> bool {
        let Target::Network { base, prefix } = self.target else {
            return false;
        };
        if self.port.is_some_and(|p| p != port) || !contains(base, prefix, ip) {
            return false;
        }
        // A reserved address is admitted only by a rule within its reserved
        // range: `127.0.0.1` and `127.0.0.0/8` name loopback, `0.0.0.0/0`
        // does not.
        reserved_prefix(ip).is_none_or(|reserved| prefix >= reserved)
    }
}

impl fmt::Debug for NetworkRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for NetworkRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for NetworkRule {
    type Err = String;

    /// Parses `10.0.0.0/8`, `10.1.2.3`, `10.1.2.3:443`, `fd00::/8`,
    /// `[fd00::1]:443`, `api.example.com` or `api.example.com:443`.
    fn from_str(s: &str) -> Result<Self, String> {
        let rule = |target, port| NetworkRule {
            target,
            port,
            text: s.to_owned(),
        };
        let port_of = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{s:?}: {p:?} is not a port (1 to 65535)")),
            Ok(p) => Ok(p),
        };
        if let Some((base, prefix)) = s.split_once('/') {
            let base: IpAddr = base.parse().map_err(|_| {
                format!(
                    "{s:?} is not an address, a network or a host name (write 10.0.0.0/8, \
                     10.1.2.3:443, [fd00::1]:443 or api.example.com:443)"
                )
            })?;
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix = prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?;
            let base = canonical(base);
            let prefix = if base.is_ipv4() && max == 128 {
                prefix.saturating_sub(96)
            } else {
                prefix
            };
            if mask(base, prefix) != base {
                return Err(format!(
                    "{s:?}: the address has bits set past the prefix; did you mean {}/{prefix}?",
                    mask(base, prefix)
                ));
            }
            return Ok(rule(Target::Network { base, prefix }, None));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            let ip = canonical(ip);
            return Ok(rule(
                Target::Network {
                    base: ip,
                    prefix: full(ip),
                },
                None,
            ));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{s:?}: port 0 is not a port (1 to 65535)"));
            }
            let ip = canonical(addr.ip());
            return Ok(rule(
                Target::Network {
                    base: ip,
                    prefix: full(ip),
                },
                Some(addr.port()),
            ));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                (host, Some(port_of(port)?))
            }
            _ => (s, None),
        };
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "{s:?} is not an address, a network or a host name (write 10.0.0.0/8, \
                 10.1.2.3:443, [fd00::1]:443 or api.example.com:443)"
            ));
        }
        Ok(rule(Target::Host(host.to_ascii_lowercase()), port))
    }
}

/// IPv4 addresses written as IPv6 (`::ffff:127.0.0.1`) as IPv4, so the
/// reserved ranges cannot be reached through another spelling.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn full(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn contains(base: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    base.is_ipv4() == ip.is_ipv4() && mask(ip, prefix) == base
}

/// The prefix length of the reserved range holding `ip` (canonical), if
/// any: loopback, link-local, unspecified ("this network"), and cloud
/// metadata services outside those (AWS's IPv6 one, Alibaba's).
fn reserved_prefix(ip: IpAddr) -> Option<u8> {
    const RANGES: &[(IpAddr, u8)] = &[
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        (IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), 32),
        (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
            128,
        ),
        (IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)), 8),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
    ];
    RANGES
        .iter()
        .find(|(base, prefix)| contains(*base, *prefix, ip))
        .map(|(_, prefix)| *prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(rules: &[&str]) -> NetworkGrant {
        NetworkGrant::Only(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn allows(grant: &NetworkGrant, addr: &str) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(grant.allows(addr.parse().unwrap()))
    }

    #[test]
    fn a_host_name_never_leads_to_a_reserved_address_unless_it_is_localhost() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(name_may_reach("LocalHost", ip("127.0.0.1")));
        assert!(name_may_reach("api.example.com", ip("93.184.216.34")));
        for reserved in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254"] {
            assert!(
                !name_may_reach("api.example.com", ip(reserved)),
                "{reserved}"
            );
        }
        assert!(allows(&only(&["localhost"]), "127.0.0.1:9000"));
    }

    #[test]
    fn the_admin_endpoint_is_out_of_reach_even_when_listed() {
        // Ports no other test here uses: the list is process-wide.
        forbid_address("127.0.0.1:59187".parse().unwrap());
        forbid_address("0.0.0.0:59188".parse().unwrap());
        let listed = only(&["127.0.0.1", "10.0.0.0/8"]);
        assert!(!allows(&listed, "127.0.0.1:59187"));
        assert!(!allows(&listed, "[::ffff:127.0.0.1]:59187"));
        assert!(allows(&listed, "127.0.0.1:59189"));
        assert!(!allows(&listed, "10.1.2.3:59188"));
        assert!(!allows(&NetworkGrant::Public, "10.1.2.3:59188"));
        assert!(allows(&listed, "10.1.2.3:59187"));
    }

    #[test]
    fn a_general_grant_keeps_off_this_machine_and_metadata() {
        let public = NetworkGrant::Public;
        for addr in [
            "10.1.2.3:80",
            "93.184.216.34:443",
            "[2001:db8::1]:443",
            "[fd00::1]:80",
        ] {
            assert!(allows(&public, addr), "{addr}");
        }
        for addr in [
            "127.0.0.1:9000",
            "127.1.2.3:9000",
            "169.254.169.254:80",
            "0.0.0.0:9000",
            "[::1]:9000",
            "[::]:9000",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:9000",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "100.100.100.200:80",
        ] {
            assert!(!allows(&public, addr), "{addr}");
        }
        assert!(!allows(&NetworkGrant::None, "10.1.2.3:80"));
    }

    #[test]
    fn a_list_allows_what_it_names() {
        let grant = only(&[
            "10.0.0.0/8",
            "192.168.1.5:5432",
            "[fd00::1]:443",
            "127.0.0.1:8080",
        ]);
        assert!(allows(&grant, "10.200.0.1:1234"));
        assert!(allows(&grant, "192.168.1.5:5432"));
        assert!(!allows(&grant, "192.168.1.5:5433"));
        assert!(!allows(&grant, "192.168.1.6:5432"));
        assert!(allows(&grant, "[fd00::1]:443"));
        assert!(allows(&grant, "127.0.0.1:8080"));
        assert!(allows(&grant, "[::ffff:127.0.0.1]:8080"));
        assert!(!allows(&grant, "127.0.0.1:8081"));
        assert!(!allows(&grant, "11.0.0.1:80"));

        // A wide range does not name loopback or metadata addresses.
        let wide = only(&["0.0.0.0/0", "::/0"]);
        assert!(allows(&wide, "8.8.8.8:53"));
        assert!(!allows(&wide, "127.0.0.1:80"));
        assert!(!allows(&wide, "169.254.169.254:80"));
        assert!(!allows(&wide, "[::1]:80"));
        assert!(allows(&only(&["169.254.169.254"]), "169.254.169.254:80"));
        assert!(allows(&only(&["127.0.0.0/8"]), "127.0.0.2:80"));

        // Host names are matched by what they resolve to.
        assert!(allows(&only(&["localhost:7000"]), "127.0.0.1:7000"));
        assert!(!allows(&only(&["localhost:7000"]), "127.0.0.1:7001"));
    }

    #[test]
    fn rules_are_parsed_with_clear_errors() {
        for ok in [
            "10.0.0.0/8",
            "10.1.2.3",
            "10.1.2.3:443",
            "fd00::/8",
            "[fd00::1]:443",
            "api.example.com",
            "Api.Example.com:443",
            "::1",
        ] {
            ok.parse::<NetworkRule>()
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = |s: &str| s.parse::<NetworkRule>().unwrap_err();
        assert!(
            err("10.0.0.1/8").contains("did you mean 10.0.0.0/8"),
            "{}",
            err("10.0.0.1/8")
        );
        assert!(err("10.0.0.0/33").contains("0 to 32"));
        assert!(err("api.example.com:0").contains("not a port"));
        assert!(err("api.example.com:https").contains("not an address"));
        assert!(err("api.example.com:70000").contains("not a port"));
        assert!(err("http://api.example.com").contains("not an address"));
        assert!(err("").contains("not an address"));
        assert!(err("a..b").contains("not an address"));
    }
}
