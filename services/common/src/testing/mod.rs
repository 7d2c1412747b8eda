//! Test support shared by the services' test suites (feature `test-support`):
//! real servers that run inside the test process.

pub mod smtp;
