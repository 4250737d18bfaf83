//! Tuning of the global allocator (mimalloc, set in the `thau` binary): [`tune`] keeps
//! freed memory for reuse longer than mimalloc's default before returning it to the
//! kernel.
//!
//! Why: a training step frees and allocates the same tens of megabytes of activations
//! and gradients every step, about two seconds apart. With mimalloc's default purge delay
//! (1 s in the mimalloc v3 that `libmimalloc-sys` builds) that memory went back to the
//! kernel between steps and came back as fresh pages
//! the kernel had to zero: 9 % of a training step went to `clear_page` in `perf`, and steps
//! ran about 5 % faster with the memory kept.

use std::os::raw::c_long;

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_t` of the mimalloc (v3)
/// that `libmimalloc-sys` builds. The Rust bindings do not name it; the test below checks
/// that this index holds the purge delay's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the allocator before it goes back to the kernel: long
/// enough to span a training step, short enough that an idle process gives memory back.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// The environment variable with which mimalloc users set the delay themselves.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], unless `MIMALLOC_PURGE_DELAY` is set
/// (mimalloc reads it itself). Call once, early in `main`.
pub fn tune() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: a plain setter of a global option; it takes any value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// mimalloc's current purge delay (ms).
pub fn purge_delay() -> c_long {
    // SAFETY: a plain getter of a global option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_tuned() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            eprintln!("{PURGE_DELAY_ENV} is set: nothing to check");
            return;
        }
        // The purge delay's default in mimalloc v3's option table is 1000 ms (no other
        // option there defaults to it): the index names the purge delay.
        assert_eq!(
            purge_delay(),
            1000,
            "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
        );
        tune();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
