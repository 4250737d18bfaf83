//! Helpers the tests share: the unit tests under `src/` and the integration tests in
//! `tests/` (which is why this is a public module, not `cfg(test)`). Not part of the
//! runtime: nothing outside tests calls it, and every helper panics on failure (a failing
//! helper is a failing test).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

/// The largest absolute difference between two tensors of the same shape (f32 or f64),
/// as f64 (exact for both).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Random tensor (f64) with a fixed seed-free but deterministic pattern.
pub fn det(shape: &[usize], salt: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| ((i as f64 * 0.7361 + salt).sin() * 1.3) + 0.05 * (i as f64 * 0.13).cos())
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Checks d(sum(f(x) * w))/dx of a fused op against central finite differences in f64.
pub fn check_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> Result<Tensor>) {
    let var = Var::from_tensor(x).unwrap();
    let y = f(var.as_tensor()).unwrap();
    let w = det(y.dims(), 3.3);
    let loss = (y * &w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let analytic: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    for i in (0..base.len()).step_by((base.len() / 40).max(1)) {
        let eval = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
            (f(&t).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (eval(h) - eval(-h)) / (2.0 * h);
        let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
        assert!(
            err < 1e-6,
            "index {i}: numeric {numeric} vs analytic {}",
            analytic[i]
        );
    }
}

/// The weights of `varmap` as plain tensors, detached from their vars: what a model
/// loaded for inference holds (so the packed decoding path serves it).
pub fn detached(varmap: &VarMap) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect()
}
