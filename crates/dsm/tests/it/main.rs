//! dsm's integration tests, one binary: the cache on local disk and object storage, the Vision
//! and REST clients and the manager against the in-process emulator, and the lifecycle guarantees
//! (no hang, no leak, nothing lost). Shared set-up lives in [`support`].
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

mod support;

mod cache;
mod lifecycle;
mod manager;
mod rest;
mod sync;
mod tables;
mod vision;
