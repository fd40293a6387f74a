//! Observability: `/metrics`, the storage quota, health and status, the
//! dashboard, the deployment artefacts, and a full disk.

mod t10_metrics;
mod t20_quota;
mod t30_status;
mod t40_dashboard;
mod t50_deploy;
mod t60_nospace;
