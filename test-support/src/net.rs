//! Free TCP ports on 127.0.0.1, for servers a test starts in another process or task.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (so two tests in one binary never get the same one).
///
/// Only for a server that must be told its port before it starts (a child process, a config
/// file naming it); a server in this process binds port 0 and reports its address instead.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, free_port()).into()
}
