//! Every integration test of the `repave` binary, in one test binary:
//! each module was its own binary once, and each of them linked the AWS
//! SDK (see the README for what merging saved). Run one module with
//! `cargo test -p repave --test integration kill9::`.

mod common;

mod aws_cli;
mod cli;
mod conformance;
mod crash;
mod disk;
mod drivers;
mod e2e;
mod hostile;
mod kill9;
mod lifetime;
mod output;
mod serve;
mod serve_http;
mod simulate;
