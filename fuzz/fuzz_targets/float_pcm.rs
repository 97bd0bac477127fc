#![no_main]
//! Fuzz target: see klio_edge::fuzzing::float_pcm.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| klio_edge::fuzzing::float_pcm(data));
