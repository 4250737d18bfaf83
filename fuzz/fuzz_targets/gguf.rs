#![no_main]
//! `cargo fuzz run gguf`: see `thau::fuzzing::gguf`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: thau::fuzzing::init(), |data: &[u8]| thau::fuzzing::gguf(data));
