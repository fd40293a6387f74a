//! Tokens and roles: every route refuses missing, wrong, revoked and
//! out-of-scope tokens and changes nothing; a writer cannot escape its
//! prefixes; revocation reaches every node; tokens survive restarts and
//! travel in snapshots.

mod common;
mod t10_refusals;
mod t20_replication;
