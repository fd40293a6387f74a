//! The register workload: clients spread over every node read, write and
//! compare-and-swap a small set of keys with unique values.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{RetryingClient, REMOVED};
use crate::history::{Event, EventType, Func, Recorder};
use crate::members::Endpoints;

/// Workload settings.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// Number of concurrent clients.
    pub clients: usize,
    /// Number of keys.
    pub keys: usize,
    /// Key prefix.
    pub prefix: String,
    /// Pause between a client's operations.
    pub think: Duration,
    /// Share of reads (the rest is split between writes and CAS).
    pub read_ratio: f64,
    /// Seed.
    pub seed: u64,
    /// Send operations through `ballast_client::Client` (exactly-once
    /// sessions; lost answers of writes are retried by the client) instead
    /// of single HTTP requests to one node.
    pub client_retries: bool,
    /// Time limit of one request (one attempt with `client_retries`).
    pub request_timeout: Duration,
}

/// Runs one client until `stop`. Each operation goes to the `index`-th
/// member (modulo): with a fixed membership the client sticks to one node,
/// and it follows membership changes. A node that answers `410 removed` is
/// reported and left for another member.
pub async fn client(
    index: usize,
    nodes: Endpoints,
    opts: RegisterOptions,
    rec: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(opts.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let mut process = index as u64 + 1;
    let mut counter = 0u64;
    // Last value this client saw per key: CAS compares against it.
    let mut last_seen: HashMap<String, String> = HashMap::new();
    // With --client-retries: one Client (one session) for this client's
    // whole run, preferring its node.
    let retrying = if opts.client_retries {
        match RetryingClient::new(
            nodes.urls_from(index),
            opts.request_timeout,
            nodes.padding(),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(client = index, error = %e, "cannot build the retrying client");
                return;
            }
        }
    } else {
        None
    };
    while !*stop.borrow() {
        let Some((node, epoch)) = nodes.pick(index) else {
            let _ = tokio::time::timeout(Duration::from_millis(50), stop.changed()).await;
            continue;
        };
        let key = format!("{}{}", opts.prefix, rng.gen_range(0..opts.keys));
        let roll: f64 = rng.gen();
        let f = if roll < opts.read_ratio {
            Func::Read
        } else if roll < opts.read_ratio + (1.0 - opts.read_ratio) / 2.0
            || !last_seen.contains_key(&key)
        {
            Func::Write
        } else {
            Func::Cas
        };
        counter += 1;
        let value = format!("{process}-{counter}");
        let mut inv = Event::new(process, EventType::Invoke, f, &key, 0);
        inv.node = Some(node.node);
        if f != Func::Read {
            inv.value = Some(value.clone());
        }
        let expected = last_seen.get(&key).cloned();
        if f == Func::Cas {
            inv.expected = expected.clone();
        }
        rec.record(inv.clone());
        let mut done = inv;
        done.kind = EventType::Ok;
        let outcome_kind = match f {
            Func::Read => match match &retrying {
                Some(r) => r.read(&key).await,
                None => node.read(&key).await,
            }
            .or_record(&mut done)
            {
                Ok(r) => {
                    done.found = Some(r.kv.is_some());
                    done.revision = r.revision;
                    if let Some(kv) = &r.kv {
                        last_seen.insert(key.clone(), kv.value.clone());
                    }
                    done.read = r.kv;
                    EventType::Ok
                }
                Err(kind) => kind,
            },
            Func::Write => match match &retrying {
                Some(r) => r.write(&key, &value).await,
                None => node.write(&key, &value).await,
            }
            .or_record(&mut done)
            {
                Ok(rev) => {
                    done.revision = rev;
                    last_seen.insert(key.clone(), value.clone());
                    EventType::Ok
                }
                Err(kind) => kind,
            },
            Func::Cas => {
                let exp = expected.unwrap_or_default();
                let outcome = match &retrying {
                    Some(r) => r.cas(&key, &exp, &value).await,
                    None => node.cas(&key, &exp, &value).await,
                };
                match outcome.or_record(&mut done) {
                    Ok(r) => {
                        done.succeeded = Some(r.succeeded);
                        done.revision = r.revision;
                        if r.succeeded {
                            last_seen.insert(key.clone(), value.clone());
                        } else if let Some(kv) = &r.read {
                            last_seen.insert(key.clone(), kv.value.clone());
                        }
                        done.read = r.read;
                        EventType::Ok
                    }
                    Err(kind) => kind,
                }
            }
            Func::Nemesis => EventType::Fail,
        };
        done.kind = outcome_kind;
        if done.error.as_deref() == Some(REMOVED) {
            nodes.gone(node.node, epoch);
        }
        rec.record(done);
        if outcome_kind == EventType::Info {
            // The operation may still be in flight: this process is retired
            // and the client goes on as a new one, as in Jepsen.
            process += opts.clients as u64;
        }
        if outcome_kind != EventType::Ok {
            // Back off a little so a down node is not hammered.
            let _ = tokio::time::timeout(Duration::from_millis(50), stop.changed()).await;
        } else if !opts.think.is_zero() {
            let _ = tokio::time::timeout(opts.think, stop.changed()).await;
        }
    }
}
