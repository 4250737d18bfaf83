//! The fuzz targets (`thau::fuzzing`) on every kept regression input
//! (`fuzz/regressions/<target>/`), the seed inputs (`fuzz/seeds/<target>/`) and a seeded
//! random sweep: none may panic. `cargo fuzz` explores far more (scripts/fuzz.sh); this
//! keeps what it found fixed.

use std::path::Path;

use rand::{Rng, SeedableRng};
use thau::fuzzing::{run, Fixture, TARGETS};

/// Random inputs per target (10x with THAU_FULL_TESTS=1).
const SWEEP: usize = 150;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn kept_inputs_do_not_crash_any_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for t in TARGETS {
        for kind in ["regressions", "seeds"] {
            for (name, data) in files(&root.join(kind).join(t)) {
                eprintln!("{kind}/{t}/{name}");
                assert!(run(t, &data));
                ran += 1;
            }
        }
    }
    assert!(ran >= TARGETS.len(), "only {ran} kept inputs");
    assert!(!run("no_such_target", b""));
}

/// Random bytes, and the fixture's own files patched and cut at random (the loaders'
/// selector byte with its high bit set).
#[test]
fn a_random_sweep_does_not_crash_any_target() {
    let n = if std::env::var_os("THAU_FULL_TESTS").is_some() {
        SWEEP * 10
    } else {
        SWEEP
    };
    let fx = Fixture::get();
    assert!(fx.gguf.is_file() && fx.checkpoint.is_dir());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for t in TARGETS {
        for i in 0..n {
            let len = rng.random_range(0..512);
            let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if i % 2 == 0 && !data.is_empty() {
                data[0] |= 0x80;
            }
            run(t, &data);
        }
    }
}
