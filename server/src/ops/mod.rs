//! Operations: Prometheus metrics and the systemd notification protocol.
//! Nothing here is on a decision path; it only observes and reports.

pub mod metrics;
pub mod systemd;
