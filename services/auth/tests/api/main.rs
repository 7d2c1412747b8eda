//! Integration tests: the real service on a real port against real
//! databases (SQLite, PostgreSQL, MariaDB), driven over HTTP. One binary,
//! one module per area.

#[macro_use]
mod helpers;

mod cli;
mod login;
mod ops;
mod users;
mod validate;
