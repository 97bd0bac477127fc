//! klio-edge: turn a corpus of audio (or any binary) files into features, with a ledger.
//!
//! Data flows one way: inputs -> fetch -> decode -> features / infer -> exec -> sink -> ledger.
//! Each stage has one module; [`pipeline`] takes one item through them (skip, retry or give
//! up as the ledger says); the drivers, [`process`] (a corpus) and [`serve`] (a source's
//! events), own the threads and call it; stages share only the nouns in [`item`].

pub mod cli;
pub mod config;
pub mod decode;
pub mod exec;
pub mod features;
pub mod fetch;
pub mod fuzzing;
pub mod infer;
pub mod infer_batch;
#[cfg(feature = "ort")]
pub mod infer_ort;
pub mod inputs;
pub mod item;
pub mod ledger;
#[cfg(feature = "opus")]
pub mod opus;
pub mod pipeline;
pub mod process;
pub mod serve;
pub mod sink;
pub mod source;
pub mod store;
pub mod term;
