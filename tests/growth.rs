//! Growth keeps what the model knows: the grown model computes the same logits (and
//! loss) on a fixed batch, at the real ages 0 → 1 → 3 and on tiny configurations that
//! change every dimension at once; training continues after growth without a spike; and
//! `thau grow` works on a checkpoint.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use thau::model::data::Corpus;
use thau::model::growth::{grow, grow_moments, grown_config, resized, Placement};
use thau::model::train::Trainer;
use thau::model::transformer::{from_tensors, init_weights, is_norm, Thau};
use thau::model::ModelConfig;
use thau::testing::max_diff;

/// Random weights with non-trivial norm gains (so the gain rescaling is exercised).
fn random_weights(cfg: &ModelConfig, seed: u64) -> HashMap<String, Tensor> {
    let vm = init_weights(cfg, seed, DType::F32, &Device::Cpu).unwrap();
    let data = vm.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            let t = v.as_tensor().detach();
            let t = if is_norm(k) {
                let n = t.dim(0).unwrap();
                let g: Vec<f32> = (0..n)
                    .map(|i| 0.5 + ((i * 37 + 11) % 17) as f32 / 10.0)
                    .collect();
                Tensor::from_vec(g, n, &Device::Cpu).unwrap()
            } else {
                t
            };
            (k.clone(), t)
        })
        .collect()
}

fn batch(cfg: &ModelConfig, n: usize) -> (Tensor, Tensor) {
    let ids: Vec<u32> = (0..2 * (n + 1))
        .map(|i| ((i * 7919 + 3) % cfg.vocab_size) as u32)
        .collect();
    let all = Tensor::from_vec(ids, (2, n + 1), &Device::Cpu).unwrap();
    (
        all.narrow(1, 0, n).unwrap().contiguous().unwrap(),
        all.narrow(1, 1, n).unwrap().contiguous().unwrap(),
    )
}

/// Grows `weights` from `from` into `to` and checks logits and loss on a fixed batch.
fn assert_exact(
    weights: &HashMap<String, Tensor>,
    from: &ModelConfig,
    to: &ModelConfig,
    placement: Placement,
) -> HashMap<String, Tensor> {
    let grown = grow(weights, from, to, placement, 5).unwrap();
    let (x, y) = batch(from, 16);
    let a: Thau = from_tensors(weights.clone(), from, &Device::Cpu).unwrap();
    let b: Thau = from_tensors(grown.clone(), to, &Device::Cpu).unwrap();
    let d = max_diff(&a.forward(&x, None).unwrap(), &b.forward(&x, None).unwrap());
    assert!(
        d < 1e-4,
        "{} → {}: max logit difference {d}",
        from.age,
        to.age
    );
    let la: f32 = a.loss(&x, &y).unwrap().0.to_scalar().unwrap();
    let lb: f32 = b.loss(&x, &y).unwrap().0.to_scalar().unwrap();
    assert!((la - lb).abs() < 1e-4, "loss {la} vs {lb}");
    grown
}

#[test]
fn tiny_growth_that_changes_every_dimension_is_exact() {
    let from = ModelConfig::tiny(61);
    let weights = random_weights(&from, 1);
    for placement in [Placement::Interleave, Placement::End] {
        let to = resized(&from, 1, 48, 5, 96).unwrap();
        assert_eq!((to.n_heads, to.head_dim), (3, 16));
        assert_exact(&weights, &from, &to, placement);
    }
    assert!(
        resized(&from, 1, 40, 2, 64).is_err(),
        "width must stay a multiple of head_dim"
    );
    assert!(resized(&from, 1, 16, 2, 64).is_err(), "no shrinking");
}

#[test]
fn growing_ages_0_to_1_to_3_is_exact() {
    let age0 = ModelConfig::for_age(0, 512, 32).unwrap();
    let w0 = random_weights(&age0, 2);
    let age1 = grown_config(&age0, 1).unwrap();
    let w1 = assert_exact(&w0, &age0, &age1, Placement::Interleave);
    let age3 = grown_config(&age1, 3).unwrap();
    assert_eq!(
        (age3.d_model, age3.n_layers, age3.n_heads, age3.d_ff),
        (768, 12, 12, 3072)
    );
    assert!((age3.rms_eps - age0.rms_eps * 384.0 / 768.0).abs() < 1e-18);
    assert_exact(&w1, &age1, &age3, Placement::Interleave);
}

#[test]
fn moments_are_zero_extended_in_place() {
    let from = ModelConfig::tiny(20);
    let to = resized(&from, 1, 48, 3, 96).unwrap();
    let mut state = HashMap::new();
    for (name, shape) in thau::model::transformer::weight_shapes(&from) {
        for p in ["m", "v"] {
            state.insert(
                format!("{p}.{name}"),
                Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu).unwrap(),
            );
        }
    }
    let grown = grow_moments(&state, &from, &to, Placement::End).unwrap();
    let q: Vec<Vec<f32>> = grown["m.blk.0.attn_q.weight"].to_vec2().unwrap();
    assert_eq!(q.len(), 48);
    assert!(q[..32]
        .iter()
        .all(|r| r[..32].iter().all(|&x| x == 1.0) && r[32..].iter().all(|&x| x == 0.0)));
    assert!(q[32..].iter().flatten().all(|&x| x == 0.0));
    let new_layer: Vec<f32> = grown["v.blk.2.ffn_norm.weight"].to_vec1().unwrap();
    assert!(new_layer.iter().all(|&x| x == 0.0));
}

#[test]
fn training_continues_after_growth_without_a_spike() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::paragraphs(40, |i| {
        format!("La estrella {i} brilla de noche. Star {i} shines at night.")
    });
    let common::Tiny {
        corpus,
        tok,
        cfg,
        mut opts,
    } = common::tiny(dir.path(), &[("stars.txt", text)], 32, 32);
    opts.lr = 3e-3;
    opts.total_steps = 80;
    opts.seed = 3;
    let mut t = Trainer::new(cfg.clone(), tok, &corpus, opts, &Device::Cpu).unwrap();
    for _ in 0..40 {
        t.step().unwrap();
    }
    let (x, y) = t.train.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
    let before: f32 = t.model().loss(&x, &y).unwrap().0.to_scalar().unwrap();
    let recent: f64 = t.state.history[35..].iter().map(|p| p.loss).sum::<f64>() / 5.0;

    let to = resized(&cfg, 1, 48, 3, 96).unwrap();
    let mut g = t.grown(&to, Placement::Interleave, &corpus).unwrap();
    let after: f32 = g.model().loss(&x, &y).unwrap().0.to_scalar().unwrap();
    assert!(
        (before - after).abs() < 1e-4,
        "growth changed the loss: {before} → {after}"
    );
    assert_eq!(g.state.schedule_origin, 40);
    let losses: Vec<f64> = (0..20).map(|_| g.step().unwrap().loss).collect();
    let worst = losses.iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        worst < recent * 1.15 + 0.05,
        "loss spiked after growth: {worst} (recent {recent})"
    );
    let last: f64 = losses[15..].iter().sum::<f64>() / 5.0;
    assert!(
        last < recent,
        "the grown model keeps learning: {last} vs {recent}"
    );
}

#[test]
fn probe_accuracy_is_measured_by_answering() {
    use thau::model::policy::probe_accuracy;
    let dir = tempfile::tempdir().unwrap();
    let qa = "{\"question\":\"¿Dónde sale el sol?\",\"answer\":\"Por el este.\"}\n{\"question\":\"Where does the sun set?\",\"answer\":\"In the west.\"}\n";
    let common::Tiny {
        corpus,
        tok,
        cfg,
        mut opts,
    } = common::tiny(dir.path(), &[("qa.jsonl", qa.to_string())], 64, 32);
    let probes = Corpus::probes(&corpus.examples);
    assert_eq!(probes.len(), 2);
    opts.batch_size = 2;
    opts.lr = 1e-2;
    opts.total_steps = 200;
    opts.seed = 1;
    let mut t = Trainer::new(cfg, tok.clone(), &corpus, opts, &Device::Cpu).unwrap();
    let before = probe_accuracy(t.model(), &tok, &probes, 8).unwrap();
    for _ in 0..200 {
        t.step().unwrap();
    }
    let after = probe_accuracy(t.model(), &tok, &probes, 8).unwrap();
    assert!(
        before.token_f1 < 0.5,
        "an untrained model does not know: {before:?}"
    );
    assert!(
        after.token_f1 > 0.9 && after.exact_match > 0.9,
        "a memorised answer is found: {after:?}"
    );
}
