//! What the tests that start real `ballastd` processes share with
//! jepsen-lite: picking the loopback ports those processes listen on, and
//! saying when a test skipped what the machine cannot do.

use std::net::TcpListener;

use rand::Rng;

/// The range ports are picked from: below the kernel's ephemeral range
/// (32768 and up on Linux, `net.ipv4.ip_local_port_range`).
pub const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for a child process to listen on.
///
/// It is chosen below the kernel's ephemeral range: a port from that range
/// ("bind port 0, release, pass it on") can be handed out meanwhile as the
/// local port of an outgoing connection, even of a peer's own reconnects to
/// it, and a node (re)started on it then cannot listen there. Nothing holds
/// the port once this returns, so callers that need several distinct ports
/// must check that they are distinct.
pub fn free_port() -> std::io::Result<u16> {
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(PORT_RANGE);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Every try taken: fall back to a port the kernel picks.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Says that a test skipped what it could not do here (no root, no
/// browser). Written straight to the process's stderr, past the test
/// harness's output capture (which only takes `print!` and `eprint!`), so
/// the message shows in `make test` and CI even though the test passes.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_below_the_ephemeral_range_and_can_be_bound() -> std::io::Result<()> {
        for _ in 0..20 {
            let port = free_port()?;
            assert!(PORT_RANGE.contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port))?;
        }
        Ok(())
    }
}
