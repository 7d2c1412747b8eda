//! Integration tests: the real service on a real port against real
//! databases (SQLite, PostgreSQL, MariaDB), driven over HTTP. One binary,
//! one module per area; every behavioural test runs once per backend.

#[macro_use]
mod helpers;

mod api;
mod cli;
mod compat;
mod controls;
mod login;
mod ops;
mod process;
mod rate_limit;
mod startup;
mod users;
mod validate;
