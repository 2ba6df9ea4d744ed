//! Free TCP ports, for servers a test starts in another process or task.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// How many ports below the kernel's ephemeral range [`free_port`] draws from.
const BAND: u16 = 10_000;

/// A TCP port that was free on every address a moment ago and that this process has not handed
/// out before (so two tests in one binary never get the same one).
///
/// The port lies just below the kernel's ephemeral range (`ip_local_port_range`, 32768 by
/// default), from which the kernel picks the local port of every outgoing connection: a port
/// from that range could be taken by any process's connection between this check and the
/// server's bind (seen as Envoy's "cannot bind: Address already in use" under load). Each process
/// starts at its own offset in the band, so test binaries running side by side rarely probe the
/// same ports.
///
/// Only for a server that must be told its port before it starts (a child process, a config
/// file naming it); a server in this process binds port 0 and reports its address instead.
pub fn free_port() -> u16 {
    static STATE: OnceLock<Mutex<(u32, HashSet<u16>)>> = OnceLock::new();
    let (low, span) = band();
    let state =
        STATE.get_or_init(|| Mutex::new((std::process::id().wrapping_mul(7919), HashSet::new())));
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..u32::from(span) {
        let port = low + (state.0 % u32::from(span)) as u16;
        state.0 = state.0.wrapping_add(1);
        // Bound on all addresses: a listener on 127.0.0.1 or 0.0.0.0 with this port conflicts.
        if !state.1.contains(&port) && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            state.1.insert(port);
            return port;
        }
    }
    panic!(
        "no free port in {low}..{}",
        u32::from(low) + u32::from(span)
    );
}

/// The band [`free_port`] draws from: `BAND` ports ending just below the ephemeral range.
fn band() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Far below 1024 there is no room; fall back to a band above the usual ephemeral range.
    if ephemeral_low > BAND + 1_024 {
        (ephemeral_low - BAND, BAND)
    } else {
        (61_000, 4_000)
    }
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, free_port()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_outside_the_ephemeral_range_and_bindable() {
        let (low, span) = band();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!(
                (low..low + span).contains(&p),
                "{p} outside {low}..{}",
                low + span
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bindable");
        }
    }
}
