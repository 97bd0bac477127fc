//! Decode: bytes of an audio file to f32 PCM blocks, mixed down or not, resampled or not. The
//! stage is the `klio-decode` crate (`decode/`), which the Python package links too; what the
//! pipeline adds is the ledger's name for each error ([`crate::pipeline::ItemError`]'s
//! `From<DecodeError>`).

pub use klio_decode::*;
