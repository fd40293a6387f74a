//! Observability: `/metrics`, the storage quota, health and status, the
//! dashboard, and the deployment artefacts.

mod t10_metrics;
mod t20_quota;
mod t30_status;
mod t40_dashboard;
mod t50_deploy;
