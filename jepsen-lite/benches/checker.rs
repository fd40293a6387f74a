//! Times the register checker on a synthetic 100,000-operation history:
//! 10 clients, 10 keys, concurrent operations with a known linearization,
//! a few indeterminate writes. Prints the time; asserts only the verdict.
//!
//! `cargo bench -p jepsen-lite --bench checker [-- OPS]`

use std::time::{Duration, Instant};

use jepsen_lite::checker::register;
use jepsen_lite::history::{Event, EventType, Func, Observed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct KeyState {
    value: Option<String>,
    version: u64,
    mod_rev: u64,
}

/// Simulates `clients` clients on `keys` keys: every operation takes effect
/// at a random instant inside its [call, ret] window, in time order, so the
/// history is linearizable by construction.
fn synth(ops: usize, clients: u64, keys: usize, info_rate: f64, seed: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state: Vec<KeyState> = (0..keys)
        .map(|_| KeyState {
            value: None,
            version: 0,
            mod_rev: 0,
        })
        .collect();
    let mut rev = 0u64;
    // Each client: (next free time, process).
    let mut free: Vec<(u64, u64)> = (0..clients)
        .map(|c| (rng.gen_range(0..1000), c + 1))
        .collect();
    // Pending (effect time, event list) sorted by effect time.
    struct Pending {
        effect: u64,
        call: u64,
        ret: u64,
        process: u64,
        key: usize,
        f: Func,
        value: String,
        expected: Option<String>,
        info: bool,
    }
    let mut pending: Vec<Pending> = Vec::new();
    for i in 0..ops {
        let c = (i as u64 % clients) as usize;
        let (t, p) = free[c];
        let call = t + rng.gen_range(0..200);
        let lat = rng.gen_range(100..3000);
        let ret = call + lat;
        let effect = call + rng.gen_range(0..lat);
        let roll: f64 = rng.gen();
        let f = if roll < 0.5 {
            Func::Read
        } else if roll < 0.8 {
            Func::Write
        } else {
            Func::Cas
        };
        let info = f != Func::Read && rng.gen_bool(info_rate);
        pending.push(Pending {
            effect,
            call,
            ret,
            process: p,
            key: rng.gen_range(0..keys),
            f,
            value: format!("v{i}"),
            expected: None,
            info,
        });
        free[c] = (ret + 1, if info { p + clients } else { p });
    }
    pending.sort_by_key(|p| p.effect);
    let mut events = Vec::with_capacity(ops * 2);
    for p in pending.iter_mut() {
        let key = format!("k{}", p.key);
        let s = &mut state[p.key];
        let mut inv = Event::new(p.process, EventType::Invoke, p.f, &key, p.call);
        let mut done = Event::new(
            p.process,
            if p.info {
                EventType::Info
            } else {
                EventType::Ok
            },
            p.f,
            &key,
            p.ret,
        );
        let observed = |s: &KeyState| {
            s.value.as_ref().map(|v| Observed {
                value: v.clone(),
                version: s.version,
                mod_revision: s.mod_rev,
                create_revision: 1,
            })
        };
        match p.f {
            Func::Read => done.read = observed(s),
            Func::Write => {
                rev += 1;
                s.value = Some(p.value.clone());
                s.version += 1;
                s.mod_rev = rev;
                inv.value = Some(p.value.clone());
                done.value = inv.value.clone();
                done.revision = Some(rev);
            }
            Func::Cas => {
                // Half the CASes compare against the current value.
                let expected = if rng.gen_bool(0.5) {
                    s.value.clone().unwrap_or_default()
                } else {
                    "nope".to_string()
                };
                p.expected = Some(expected.clone());
                inv.value = Some(p.value.clone());
                inv.expected = Some(expected.clone());
                done.value = inv.value.clone();
                done.expected = inv.expected.clone();
                if s.value.as_deref() == Some(expected.as_str()) {
                    rev += 1;
                    s.value = Some(p.value.clone());
                    s.version += 1;
                    s.mod_rev = rev;
                    done.succeeded = Some(true);
                    done.revision = Some(rev);
                } else {
                    done.succeeded = Some(false);
                    done.read = observed(s);
                    done.revision = Some(rev);
                }
            }
            Func::Nemesis => {}
        }
        if p.info {
            done.revision = None;
            done.succeeded = None;
            done.read = None;
        }
        events.push(inv);
        events.push(done);
    }
    events.sort_by_key(|e| (e.time, e.kind != EventType::Invoke));
    events
}

fn main() {
    let ops: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    for (keys, info_rate) in [(10, 0.002), (3, 0.01), (1, 0.01)] {
        let events = synth(ops, 10, keys, info_rate, 7);
        let started = Instant::now();
        let r = register::check(&events, Duration::from_secs(60));
        let elapsed = started.elapsed();
        println!(
            "register checker: {ops} operations ({} events, 10 clients, {keys} keys, {:.1}% of writes indeterminate): {} in {:.2} s",
            events.len(),
            info_rate * 100.0,
            r.verdict.label(),
            elapsed.as_secs_f64()
        );
        assert!(
            r.verdict.is_pass(),
            "synthetic history must pass: {:?}",
            r.verdict
        );
    }
}
