//! Matrix products for the kernels, through the `gemm` crate's kernel on strided slices:
//! [`gemm_into`] writes or accumulates into a buffer, [`gemm_fresh`] returns a new one
//! without zeroing it first. Both check every operand's extent before the unsafe call.

use super::kernel::Real;

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, operands given by row and
/// column strides; `parallel` splits the product over rayon's threads (off inside an
/// already-parallel loop). Checks every operand's extent before calling the gemm kernel.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_into<T: Real>(
    dst: &mut [T],
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    assert!(dst.len() >= m * n, "gemm_into: dst too small");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    check_operands((m, n, k), lhs, (lhs_rs, lhs_cs), rhs, (rhs_rs, rhs_cs));
    // SAFETY: the operands' extents are checked, `dst` holds `m·n` values and is
    // borrowed mutably so nothing else reads it meanwhile.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            (m, n, k),
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            accumulate,
            parallel,
        )
    };
}

/// `lhs (m×k) · rhs (k×n)` as a new row-major `m×n` vector, written by the gemm kernel
/// into uninitialised memory: zeroing tens of megabytes that the product overwrites
/// anyway was a memset of every output and gradient of every linear layer each step.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_fresh<T: Real>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) -> Vec<T> {
    if m == 0 || n == 0 || k == 0 {
        return vec![T::zero(); m * n];
    }
    check_operands((m, n, k), lhs, (lhs_rs, lhs_cs), rhs, (rhs_rs, rhs_cs));
    let mut out: Vec<T> = Vec::with_capacity(m * n);
    // SAFETY: the operands' extents are checked; `out` has room for `m·n` values, which
    // the kernel writes without reading (no accumulation) before `set_len` exposes them.
    unsafe {
        gemm_raw(
            out.as_mut_ptr(),
            (m, n, k),
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            false,
            parallel,
        );
        out.set_len(m * n);
    }
    out
}

/// Panics unless `lhs` and `rhs` hold every element the strides reach.
fn check_operands<T>(
    (m, n, k): (usize, usize, usize),
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let extent =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(
        lhs.len() >= extent(m, k, lhs_rs, lhs_cs),
        "gemm: lhs too small"
    );
    assert!(
        rhs.len() >= extent(k, n, rhs_rs, rhs_cs),
        "gemm: rhs too small"
    );
}

/// The gemm kernel on checked operands.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of `m·n` values, and
/// `m`, `n`, `k` must be above zero with the operands' extents checked.
unsafe fn gemm_raw<T: Real>(
    dst: *mut T,
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[T], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[T], usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        lhs.as_ptr(),
        lhs_cs as isize,
        lhs_rs as isize,
        rhs.as_ptr(),
        rhs_cs as isize,
        rhs_rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        par,
    );
}
