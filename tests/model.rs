//! The THAU model end to end on tiny configurations: gradients of the whole model against
//! finite differences, overfitting a short text, resume equivalence, seeded generation,
//! and clear errors for damaged checkpoints.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use thau::model::checkpoint;
use thau::model::data::Corpus;
use thau::model::generate::{generate, score, SamplingParams};
use thau::model::ops::IGNORE_INDEX;
use thau::model::tokenizer::ThauTokenizer;
use thau::model::train::{TrainOptions, Trainer};
use thau::model::transformer::{from_varmap, init_weights};
use thau::model::ModelConfig;

const TEXT: &str = "El sol sale por el este y se pone por el oeste. \
The sun rises in the east and sets in the west. \
¿Por qué el cielo es azul? Because air scatters blue light more than red light.";

fn corpus_dir(dir: &Path) -> Corpus {
    std::fs::write(dir.join("sun.txt"), TEXT).unwrap();
    std::fs::write(
        dir.join("qa.jsonl"),
        "{\"question\":\"¿Dónde sale el sol?\",\"answer\":\"Por el este.\"}\n\
         {\"question\":\"Where does the sun set?\",\"answer\":\"In the west.\"}\n",
    )
    .unwrap();
    Corpus::load(dir).unwrap()
}

fn tiny_setup(
    dir: &Path,
    seq_len: usize,
    heldout: f64,
) -> (Corpus, ThauTokenizer, ModelConfig, TrainOptions) {
    let corpus = corpus_dir(dir);
    let texts: Vec<String> = corpus.examples.iter().map(|e| e.text()).collect();
    let tok = ThauTokenizer::train(texts.into_iter(), 320).unwrap();
    let mut cfg = ModelConfig::tiny(tok.vocab_size());
    cfg.max_seq_len = seq_len;
    let opts = TrainOptions {
        batch_size: 2,
        seq_len,
        lr: 3e-3,
        warmup: 5,
        total_steps: 200,
        heldout,
        eval_batches: 2,
        seed: 11,
        ..Default::default()
    };
    (corpus, tok, cfg, opts)
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    let cfg = ModelConfig::tiny(23);
    let dev = Device::Cpu;
    let vm = init_weights(&cfg, 3, DType::F64, &dev).unwrap();
    let model = from_varmap(&vm, &cfg, DType::F64, &dev).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 7, 22, 3, 9], [4, 4, 8, 0, 13, 2]], &dev).unwrap();
    let tg = Tensor::new(
        &[[5u32, 7, 22, 3, 9, 1], [4, IGNORE_INDEX, 0, 13, 2, 6]],
        &dev,
    )
    .unwrap();
    let (loss, _) = model.loss(&ids, &tg).unwrap();
    let grads = loss.backward().unwrap();
    let vars = vm.data().lock().unwrap().clone();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut checked = 0;
    for name in names {
        let var = &vars[name];
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let w0: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // A few coordinates of every weight: the largest-gradient one and two fixed ones.
        let top = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        for i in [top, 0, w0.len() / 2] {
            let eval = |delta: f64| {
                let mut w = w0.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &dev).unwrap())
                    .unwrap();
                let (l, _) = model.loss(&ids, &tg).unwrap();
                l.to_scalar::<f64>().unwrap()
            };
            let h = 1e-5;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(w0.clone(), var.shape(), &dev).unwrap())
                .unwrap();
            let err = (numeric - g[i]).abs() / (1e-6 + numeric.abs().max(g[i].abs()));
            assert!(
                err < 1e-4 || (numeric - g[i]).abs() < 1e-9,
                "{name}[{i}]: numeric {numeric} analytic {}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked >= 3 * (2 + 9 * cfg.n_layers + 1));
}

#[test]
fn a_tiny_model_overfits_a_short_text() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, tok, cfg, mut opts) = tiny_setup(dir.path(), 32, 0.0);
    opts.lr = 1e-2;
    opts.total_steps = 150;
    opts.adamw.weight_decay = 0.0;
    let mut t = Trainer::new(cfg, tok, &corpus, opts, &Device::Cpu).unwrap();
    let first = t.step().unwrap().loss;
    let mut last = first;
    for _ in 1..150 {
        last = t.step().unwrap().loss;
    }
    assert!(first > 4.0, "initial loss {first} should be near ln(vocab)");
    assert!(last < 0.1, "loss after 150 steps: {last}");
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, tok, cfg, opts) = tiny_setup(dir.path(), 16, 0.0);
    let dev = Device::Cpu;
    let mut straight = Trainer::new(cfg.clone(), tok.clone(), &corpus, opts.clone(), &dev).unwrap();
    let a: Vec<f64> = (0..8).map(|_| straight.step().unwrap().loss).collect();

    let mut first = Trainer::new(cfg, tok, &corpus, opts, &dev).unwrap();
    let mut b: Vec<f64> = (0..4).map(|_| first.step().unwrap().loss).collect();
    let ckdir = dir.path().join("ck");
    first.save(&ckdir).unwrap();
    drop(first);
    let ck = checkpoint::load(&checkpoint::latest(&ckdir).unwrap().unwrap(), &dev, true).unwrap();
    let mut resumed = Trainer::resume(ck, &corpus, None, &dev).unwrap();
    b.extend((0..4).map(|_| resumed.step().unwrap().loss));
    assert_eq!(a, b, "resumed run diverged");
}

#[test]
fn seeded_generation_is_reproducible_and_scores_are_log_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, tok, cfg, opts) = tiny_setup(dir.path(), 32, 0.0);
    let mut t = Trainer::new(cfg, tok.clone(), &corpus, opts, &Device::Cpu).unwrap();
    for _ in 0..20 {
        t.step().unwrap();
    }
    let prompt = tok.encode("El sol").unwrap();
    let run = |seed| {
        let params = SamplingParams {
            max_new_tokens: 12,
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        let mut streamed = String::new();
        let g = generate(
            t.model(),
            &tok,
            &prompt,
            &params,
            &[tok.special.eot],
            None,
            &mut |s| {
                streamed.push_str(s);
                true
            },
        )
        .unwrap();
        assert_eq!(streamed, g.text, "the stream adds up to the text");
        g.ids
    };
    assert_eq!(run(5), run(5));
    let outs: Vec<Vec<u32>> = (0..6).map(run).collect();
    assert!(
        outs.iter().any(|o| o != &outs[0]),
        "different seeds should not all agree"
    );
    let lp = score(t.model(), &prompt, &tok.encode(" sale").unwrap()).unwrap();
    assert!(!lp.is_empty() && lp.iter().all(|&p| p <= 0.0 && p.is_finite()));
}

#[test]
fn damaged_checkpoints_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, tok, cfg, opts) = tiny_setup(dir.path(), 16, 0.0);
    let dev = Device::Cpu;
    let t = Trainer::new(cfg, tok, &corpus, opts, &dev).unwrap();
    let ckdir = dir.path().join("ck");
    let path = t.save(&ckdir).unwrap();
    assert!(checkpoint::load(&path, &dev, true).is_ok());

    let weights = path.join(checkpoint::WEIGHTS);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&path, &dev, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&weights, &bytes).unwrap();

    let cfg_path = path.join(checkpoint::CONFIG);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        text.replace("\"d_model\": 32", "\"d_model\": 48"),
    )
    .unwrap();
    let err = checkpoint::load(&path, &dev, true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("shape"),
        "{err}"
    );
    std::fs::write(&cfg_path, "{\"age\": 0").unwrap();
    let err = checkpoint::load(&path, &dev, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}
