//! The machinery every fused op is written with: the element types ([`Real`]), a
//! kernel's inputs and output ([`In`], [`Out`]), kernels over one, two or three tensors
//! ([`Kernel1`], [`Kernel2`], [`Kernel3`], each written once for f32 and f64) and [`Op`],
//! which adapts a kernel to candle's custom-op traits (dtype dispatch, slicing, storage).

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType,
};
use num_traits::Float;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd::exp_slice_avx512;

/// Element types the kernels are written for.
pub(super) trait Real: WithDType + Float {
    /// `x = exp(x)` for every value (vectorised for f32 where the CPU allows: libm's
    /// scalar `expf` was a tenth of a training step, in the softmaxes, the loss and SwiGLU).
    fn exp_in_place(xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = x.exp());
    }
}
impl Real for f32 {
    fn exp_in_place(xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { exp_slice_avx512(xs) };
            return;
        }
        xs.iter_mut().for_each(|x| *x = x.exp());
    }
}
impl Real for f64 {}

/// The contiguous slice of a storage described by `layout`.
pub(super) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// A tensor's values on the host (for backward passes that compute several gradients).
pub(super) fn host<T: Real>(t: &Tensor) -> Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// Whether the fused kernels can serve this tensor (CPU, f32 or f64).
pub(super) fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// One input of a kernel: its contiguous values and its shape.
#[derive(Clone, Copy)]
pub(super) struct In<'a, T> {
    pub(super) x: &'a [T],
    pub(super) shape: &'a Shape,
}

/// Output of a kernel: values and shape.
pub(super) type Out<T> = Result<(Vec<T>, Shape)>;

/// A CPU kernel over one tensor, with its backward.
pub(super) trait Kernel1: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>) -> Out<T>;
    fn backward(&self, _a: &Tensor, _res: &Tensor, _g: &Tensor) -> Result<Option<Tensor>> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// A CPU kernel over two tensors, with its backward.
pub(super) trait Kernel2: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>, b: In<T>) -> Out<T>;
    fn backward(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        _g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// A CPU kernel over three tensors, with its backward.
pub(super) trait Kernel3: Send + Sync + 'static {
    const NAME: &'static str;
    fn run<T: Real>(&self, a: In<T>, b: In<T>, c: In<T>) -> Out<T>;
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _c: &Tensor,
        _res: &Tensor,
        _g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        bail!("{}: no backward", Self::NAME)
    }
}

/// Adapts a kernel to candle's custom-op traits (dtype dispatch, slicing, storage).
pub(super) struct Op<K>(pub(super) K);

fn input<'a, T: Real>(s: &'a CpuStorage, l: &'a Layout, op: &str) -> Result<In<'a, T>> {
    Ok(In {
        x: slice::<T>(s, l, op)?,
        shape: l.shape(),
    })
}

fn store<T: Real>(out: Out<T>) -> Result<(CpuStorage, Shape)> {
    let (v, shape) = out?;
    Ok((T::to_cpu_storage_owned(v), shape))
}

impl<K: Kernel1> CustomOp1 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => store(self.0.run(input::<f32>(s, l, K::NAME)?)),
            CpuStorage::F64(_) => store(self.0.run(input::<f64>(s, l, K::NAME)?)),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(&self, a: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        self.0.backward(a, res, &g.contiguous()?)
    }
}

impl<K: Kernel2> CustomOp2 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn go<T: Real, K: Kernel2>(
            k: &K,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            store(k.run(input::<T>(s1, l1, K::NAME)?, input::<T>(s2, l2, K::NAME)?))
        }
        match s1 {
            CpuStorage::F32(_) => go::<f32, K>(&self.0, s1, l1, s2, l2),
            CpuStorage::F64(_) => go::<f64, K>(&self.0, s1, l1, s2, l2),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.0.backward(a, b, res, &g.contiguous()?)
    }
}

impl<K: Kernel3> CustomOp3 for Op<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn go<T: Real, K: Kernel3>(
            k: &K,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            store(k.run(
                input::<T>(s1, l1, K::NAME)?,
                input::<T>(s2, l2, K::NAME)?,
                input::<T>(s3, l3, K::NAME)?,
            ))
        }
        match s1 {
            CpuStorage::F32(_) => go::<f32, K>(&self.0, s1, l1, s2, l2, s3, l3),
            CpuStorage::F64(_) => go::<f64, K>(&self.0, s1, l1, s2, l2, s3, l3),
            _ => bail!("{}: only f32 and f64 are supported", K::NAME),
        }
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.0.backward(a, b, c, res, &g.contiguous()?)
    }
}

/// Runs `f` over matching chunks of rows of `out` and `x` in parallel.
pub(super) fn rows_mut<T: Real>(
    out: &mut [T],
    x: &[T],
    width: usize,
    f: impl Fn(usize, &mut [T], &[T]) + Sync,
) {
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .enumerate()
        .for_each(|(i, (o, xr))| f(i, o, xr));
}

pub(super) fn last_dim(s: &Shape) -> usize {
    s.dims().last().copied().unwrap_or(1)
}
