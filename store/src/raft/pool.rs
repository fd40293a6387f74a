//! Pooled peer connections for forwarded writes and read-index requests, which
//! run concurrently (one connection each) unlike openraft's replication.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::network::NetFault;
use super::types::NodeId;
use super::wire::{self, CallError, FrameCaps, PeerConn, PeerIdentity, PeerRequest, PeerResponse};
use crate::tls::PeerTls;

/// Most idle connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 512;

/// A pool of idle peer connections keyed by address.
pub struct PeerPool {
    idle: Mutex<HashMap<String, Vec<PeerConn>>>,
    fault: NetFault,
    connect_timeout: Duration,
    caps: FrameCaps,
    me: PeerIdentity,
    tls: PeerTls,
}

impl PeerPool {
    /// An empty pool whose traffic obeys `fault`.
    pub fn new(
        fault: NetFault,
        connect_timeout: Duration,
        caps: FrameCaps,
        me: PeerIdentity,
        tls: PeerTls,
    ) -> Self {
        PeerPool {
            idle: Mutex::new(HashMap::new()),
            fault,
            connect_timeout,
            caps,
            me,
            tls,
        }
    }

    fn take(&self, addr: &str) -> Option<PeerConn> {
        loop {
            let mut conn = self.idle.lock().ok()?.get_mut(addr)?.pop()?;
            if wire::is_usable(&mut conn) {
                return Some(conn);
            }
        }
    }

    fn give_back(&self, addr: &str, conn: PeerConn) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(addr.to_string()).or_default();
            if conns.len() < MAX_IDLE_PER_TARGET {
                conns.push(conn);
            }
        }
    }

    /// Drops every idle connection (after the node's traffic was cut, so that
    /// healing starts from fresh connections).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Sends `req` to node `to` at `addr` and waits up to `timeout` for the
    /// answer.
    pub async fn call(
        &self,
        addr: &str,
        to: NodeId,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        if self.fault.is_isolated() {
            return Err(CallError::Connect {
                addr: addr.to_string(),
                message: "this node's peer traffic is cut".into(),
            });
        }
        let mut conn = match self.take(addr) {
            Some(c) => c,
            None => {
                let connect = self.connect_timeout.min(timeout);
                wire::connect_with(addr, connect, self.caps, &self.tls).await?
            }
        };
        let result = wire::call(&mut conn, addr, self.me, to, req, timeout).await;
        if result.is_ok() {
            self.give_back(addr, conn);
        }
        result
    }
}
