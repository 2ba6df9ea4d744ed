//! The small string grammars of gateway.yaml (spec §2): durations, rates, `host:port`, host
//! names, HTTP tokens. Pure functions returning a reason on failure; the decoder adds positions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::model::{Cidr, HostPort, Rate};

/// The duration forms we accept, quoted in error messages so users see the grammar.
pub const DURATION_HINT: &str = "a duration like 250ms, 5s, 1m, 1h, 1d (a whole number and a unit)";

/// The rate forms we accept, quoted in error messages.
pub const RATE_HINT: &str =
    "a rate like 100/minute (N/second|minute|hour|day, also s|min|h|d) or 100/30s";

/// The size forms we accept, quoted in error messages.
pub const SIZE_HINT: &str =
    "a size like 512KiB, 1MiB, 20MiB or 65536 (bytes; a whole number, alone or with KiB|MiB|GiB)";

/// The CIDR forms we accept, quoted in error messages.
pub const CIDR_HINT: &str =
    "a CIDR like 10.0.0.0/8, 2001:db8::/32 or a single address like 192.168.1.7";

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.168.1.7` is `/32`, `::1` is `/128`).
/// An address with bits set past its prefix (`10.0.0.1/8`) is refused rather than masked: it
/// admits or refuses far more than the one address it names, which is rarely what was meant.
/// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) become the IPv4 network they stand for.
pub fn cidr(s: &str) -> Result<Cidr, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "the prefix length `{l}` is not a number in 0..={max}"
                ))
            }
        },
    };
    let network = mask(addr, prefix_len);
    if network != addr {
        return Err(format!(
            "`{addr}` has bits set past the /{prefix_len} prefix; write {network}/{prefix_len} \
             for the network, or {addr} alone for the one address"
        ));
    }
    Ok(match addr {
        IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => Cidr {
                addr: IpAddr::V4(v4),
                prefix_len: prefix_len - 96,
            },
            None => Cidr { addr, prefix_len },
        },
        _ => Cidr { addr, prefix_len },
    })
}

/// `addr` with every bit past the first `len` cleared.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// `65536` (bytes), `512KiB`, `1MiB`, `2GiB`: a whole number and an optional binary unit. No
/// decimal units (`MB`): they would leave users guessing whether 1000 or 1024 is meant.
pub fn size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let per_unit: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(per_unit)
}

/// The percentage forms we accept, quoted in error messages.
pub const PERCENT_HINT: &str =
    "a percentage like 10%, 0.5% or 100% (0% to 100%, at most 4 decimals)";

/// `10%`, `0.5%`, `100%`: 0 to 100 with at most four decimals (a millionth, the finest share
/// Envoy's fractions express), as millionths. No exponent, sign or missing digit (`.5%`).
pub fn percent(s: &str) -> Option<u32> {
    let number = s.strip_suffix('%')?;
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || !digits(whole) || !digits(frac) || frac.len() > 4 {
        return None;
    }
    if number.contains('.') && frac.is_empty() {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let frac: u32 = format!("{frac:0<4}").parse().ok()?;
    let per_million = whole * 10_000 + frac;
    (per_million <= 1_000_000).then_some(per_million)
}

/// `250ms`, `5s`, `1m`, `1h`, `1d`. Fractions (`1.5s`) are rejected on purpose: `1500ms` says the
/// same thing without leaving anyone to wonder how Envoy rounds.
pub fn duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs_per_unit: u64 = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs_per_unit).map(Duration::from_secs)
}

/// The longest window a rate may have: 2^52 ms, about 142,000 years (counters keep bucket
/// indices and instants as doubles, whole numbers up to this are exact).
pub const MAX_WINDOW: Duration = Duration::from_millis(1 << 52);

/// `N/second|minute|hour|day` (also `s`, `min`, `h`, `d`) or `N/<duration>`; `N ≥ 1` and a
/// non-zero window of at most [`MAX_WINDOW`].
pub fn rate(s: &str) -> Result<Rate, String> {
    let Some((n, window)) = s.split_once('/') else {
        return Err("missing `/` between the count and the window".to_string());
    };
    let requests = match n.parse::<u64>() {
        Ok(count) if count >= 1 && n.bytes().all(|b| b.is_ascii_digit()) => count,
        _ => return Err(format!("the count `{n}` is not a whole number ≥ 1")),
    };
    let window = match window {
        "second" | "s" => Duration::from_secs(1),
        "minute" | "min" => Duration::from_secs(60),
        "hour" | "h" => Duration::from_secs(3600),
        "day" | "d" => Duration::from_secs(86_400),
        other => match duration(other) {
            Some(d) if d > MAX_WINDOW => {
                return Err(format!(
                    "the window `{other}` is longer than {} ms (about 142,000 years)",
                    MAX_WINDOW.as_millis()
                ))
            }
            Some(d) if !d.is_zero() => d,
            Some(_) => return Err("the window must be longer than zero".to_string()),
            None => return Err(format!("the window `{other}` is not a unit or a duration")),
        },
    };
    Ok(Rate { requests, window })
}

/// `host:port` with `host` an IP literal or DNS name; IPv6 in brackets (`[::1]:80`).
pub fn host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("missing `]` after the IPv6 address".to_string());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err("missing `:port` after the address".to_string());
        };
        (host, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err("missing `:port`".to_string());
        };
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, like [::1]:80".to_string());
        }
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(format!(
                "`{host}` is neither an IP address nor a valid host name"
            ));
        }
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(format!("the port `{port}` is not a number in 1..=65535")),
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// A DNS name: dot-separated labels of letters, digits, `-` (and `_`, which container
/// orchestrators use in service names and resolvers accept).
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An HTTP `token` (RFC 9110 §5.6.2): what header names and methods are made of.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A media type `type/subtype` without parameters (RFC 9110 §8.3.1).
pub fn is_media_type(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(t, sub)| is_token(t) && is_token(sub))
}

/// An environment variable name as POSIX shells accept it.
pub fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `http://` to this machine: `localhost`, `127.0.0.1` or `[::1]`, with any port and path.
pub fn is_loopback_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// `http://host[:port]…` or `https://…` with a non-empty host.
pub fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let authority = r.split(['/', '?', '#']).next().unwrap_or("");
        !authority.is_empty() && !authority.contains(char::is_whitespace)
    })
}

/// A CORS origin: `scheme://host[:port]` with no path.
pub fn is_origin(s: &str) -> bool {
    let Some((scheme, authority)) = s.split_once("://") else {
        return false;
    };
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            h
        }
        _ => authority,
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok() || is_dns_name(host),
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("250ms", Some(Duration::from_millis(250))),
            ("5s", Some(Duration::from_secs(5))),
            ("1m", Some(Duration::from_secs(60))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1d", Some(Duration::from_secs(86_400))),
            ("0s", Some(Duration::ZERO)),
            ("1.5s", None),
            ("5", None),
            ("s", None),
            ("5 s", None),
            ("-5s", None),
            ("5sec", None),
            ("99999999999999999999d", None),
            ("999999999999999999d", None),
        ];
        for (s, want) in cases {
            assert_eq!(duration(s), want, "{s}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("65536", Some(65_536)),
            ("512KiB", Some(512 << 10)),
            ("1MiB", Some(1 << 20)),
            ("20MiB", Some(20 << 20)),
            ("2GiB", Some(2 << 30)),
            ("0", Some(0)),
            ("1MB", None),
            ("1mib", None),
            ("1.5MiB", None),
            ("MiB", None),
            ("1 MiB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
        ];
        for (s, want) in cases {
            assert_eq!(size(s), want, "{s}");
        }
    }

    #[test]
    fn cidrs() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("192.168.1.7", "192.168.1.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::1", "::1/128"),
            ("::/0", "::/0"),
            ("10.0.0.0/08", "10.0.0.0/8"),
            // IPv4-mapped IPv6 is the IPv4 network it stands for.
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:192.168.1.7", "192.168.1.7/32"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            // Not mapped: an IPv6 network like any other.
            ("64:ff9b::/96", "64:ff9b::/96"),
        ];
        for (s, want) in ok {
            assert_eq!(cidr(s).map(|c| c.to_string()), Ok(want.to_string()), "{s}");
        }
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0/8",
            "010.0.0.0/8",
            "256.0.0.0/8",
            "[::1]",
            "[::1]/128",
            "10.0.0.0/8/8",
            " 10.0.0.0/8",
            "localhost",
            "",
            "2001:db8::1/32",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        assert!(cidr("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn percents() {
        let cases = [
            ("10%", Some(100_000)),
            ("0.5%", Some(5_000)),
            ("100%", Some(1_000_000)),
            ("100.0%", Some(1_000_000)),
            ("0%", Some(0)),
            ("0.0001%", Some(1)),
            ("99.9999%", Some(999_999)),
            ("007%", Some(70_000)),
            ("100.0001%", None),
            ("101%", None),
            ("1000%", None),
            ("0.00001%", None),
            ("10", None),
            ("10 %", None),
            (".5%", None),
            ("5.%", None),
            ("-1%", None),
            ("+1%", None),
            ("1e1%", None),
            ("%", None),
        ];
        for (s, want) in cases {
            assert_eq!(percent(s), want, "{s}");
        }
    }

    #[test]
    fn rates() {
        let ok = [
            ("100/minute", 100, 60),
            ("5/second", 5, 1),
            ("5/s", 5, 1),
            ("7/min", 7, 60),
            ("1/h", 1, 3600),
            ("2/day", 2, 86_400),
            ("100/30s", 100, 30),
            ("3/2m", 3, 120),
            ("1/36500d", 1, 36_500 * 86_400),
        ];
        for (s, n, secs) in ok {
            assert_eq!(
                rate(s),
                Ok(Rate {
                    requests: n,
                    window: Duration::from_secs(secs)
                }),
                "{s}"
            );
        }
        for bad in [
            "0/minute",
            "100",
            "100/fortnight",
            "100/0s",
            "-1/s",
            "+1/s",
            "x/s",
            "/s",
            "1/4503599627370497ms",
            "1/99999999999d",
        ] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            host_port("127.0.0.1:80"),
            Ok(HostPort {
                host: "127.0.0.1".into(),
                port: 80
            })
        );
        assert_eq!(
            host_port("[::1]:8080"),
            Ok(HostPort {
                host: "::1".into(),
                port: 8080
            })
        );
        assert_eq!(
            host_port("users.internal:443").map(|h| h.host),
            Ok("users.internal".into())
        );
        for bad in [
            "::1:80",
            "host",
            "host:0",
            "host:65536",
            "host:+1",
            "-bad-:80",
            "[zz]:1",
            "[::1]",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(is_token("x-api-key"));
        assert!(!is_token("x api"));
        assert!(!is_token(":path"));
        assert!(is_env_name("JWT_SECRET"));
        assert!(!is_env_name("1X"));
        assert!(is_http_url("https://auth.example.com/jwks"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("https://"));
        assert!(is_loopback_url("http://127.0.0.1:8080/jwks"));
        assert!(is_loopback_url("http://localhost/jwks"));
        assert!(is_loopback_url("http://[::1]:9/x"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.test/jwks"));
        assert!(!is_loopback_url("https://127.0.0.1/jwks"));
        assert!(!is_loopback_url("http://auth.example.com/jwks"));
        assert!(is_origin("https://app.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("https://app.example.com:"));
        assert!(!is_origin("app.example.com"));
    }
}
