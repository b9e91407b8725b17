//! The one integration-test binary: every test starts its own redis-server on
//! a free port (see `support`), never a shared instance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod faults;
mod http_executor;
mod smoke;
mod support;
mod workers;
