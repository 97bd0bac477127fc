//! The integration tests, in one binary (so the crate links once): a module per area. Each
//! drives the built `klio-edge` binary in a temp folder, with real brokers, emulators and
//! tools on loopback where an area needs them (`scripts/test.sh` installs them).
//!
//! Run one area with `scripts/test.sh --test it process::`.

mod common;

mod cli;
mod crash;
mod examples;
mod exec;
mod export;
mod formats;
mod fuzz_props;
mod hostile;
mod infer_models;
mod infer_ort;
mod librosa_parity;
mod mounts;
mod pictures;
mod process;
mod readme;
mod scripts;
mod serve_inbox;
mod serve_nats;
mod serve_pubsub;
mod stores;
mod vad;
