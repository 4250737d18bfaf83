#![no_main]
//! `cargo fuzz run tool_calls`: see `thau::fuzzing::tool_calls`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: thau::fuzzing::init(), |data: &[u8]| thau::fuzzing::tool_calls(data));
