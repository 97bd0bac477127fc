//! klio-edge: turn a corpus of audio (or any binary) files into features, with a ledger.
//!
//! Data flows one way: inputs -> fetch -> decode -> features / infer -> exec -> sink -> ledger.
//! Each stage has one module under [`stage`]; [`pipeline`] takes one item through them (skip,
//! retry or give up as [`pipeline::skip`] decides); the drivers, [`process`] (a corpus) and
//! [`serve`] (a source's events, from [`source`]), own the threads and call it; [`cli`] turns
//! the command line into one resolved [`config::Config`] and owns signals and exit codes.
//! Stages share only the nouns in [`item`], [`pipeline::ErrorKind`] and
//! [`pipeline::meta::ItemMeta`]. ARCHITECTURE.md at the repository root has the map.

pub mod cli;
pub mod config;
pub mod export;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod inputs;
pub mod item;
pub mod ledger;
pub mod picture;
pub mod pipeline;
pub mod process;
pub mod serve;
pub mod source;
pub mod stage;
pub mod store;
pub mod term;
