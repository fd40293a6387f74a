//! Replica: static stability (serving through a full outage and after its own
//! restart with the cluster down), never-backwards failover to lagging nodes,
//! and rollout reports.

mod common;
mod t10_outage;
mod t20_failover;
mod t30_reports;
mod t40_admission;
mod t50_staleness;
mod t60_compacted;
mod t70_buffer;
mod t80_data_plane;
