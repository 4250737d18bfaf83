#![no_main]
//! `cargo fuzz run config`: see `thau::fuzzing::config`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: thau::fuzzing::init(), |data: &[u8]| thau::fuzzing::config(data));
