#![no_main]
//! `cargo fuzz run checkpoint`: see `thau::fuzzing::checkpoint`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: thau::fuzzing::init(), |data: &[u8]| thau::fuzzing::checkpoint(data));
