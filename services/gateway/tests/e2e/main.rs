//! End-to-end tests: the four services together on real infrastructure.
//! One test binary (all modules declared here) so the stack helpers compile once.

mod abuse;
mod api;
mod contract;
mod events;
mod failures;
mod flow;
mod fuzz;
mod helpers;
mod metrics;
mod ops;
mod shutdown;
mod slips;
mod tokens;
mod trust;
mod uploads;
