#![no_main]
//! `cargo fuzz run scenario`: see `thau::fuzzing::scenario`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: thau::fuzzing::init(), |data: &[u8]| thau::fuzzing::scenario(data));
