//! Cluster behaviour: replication, failover, restarts, snapshots, partitions.

mod t100_membership;
mod t10_basic;
mod t110_hostile_clients;
mod t120_request_limits;
mod t125_http2;
mod t140_tls;
mod t15_concurrent_writes;
mod t20_failover;
mod t30_restart;
mod t40_snapshot;
mod t50_partition;
mod t60_replicas;
mod t70_identity;
mod t80_large_values;
mod t90_snapshot_catch_up;
mod t95_backup_restore;
