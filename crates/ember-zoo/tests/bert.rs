//! The BERT encoder against an independent implementation: `fixtures/bert/reference.py` (NumPy,
//! float64) computed the token ids and sentence embeddings of `fixtures/bert/sentences.txt`
//! with the tiny randomly initialized model in `fixtures/bert/tiny`, which has
//! all-MiniLM-L6-v2's layout; and every way a model folder or a sentence can be bad.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use ember_zoo::Error;
use ember_zoo::bert::SentenceEncoder;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bert/tiny")
}

struct Reference {
    max_len: usize,
    sentences: Vec<String>,
    ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f64>>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(tiny().join("reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = json["rows"].as_array().unwrap();
    Reference {
        max_len: json["max_len"].as_u64().unwrap() as usize,
        sentences: rows
            .iter()
            .map(|r| r["sentence"].as_str().unwrap().to_string())
            .collect(),
        ids: rows
            .iter()
            .map(|r| {
                r["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect(),
        embeddings: rows
            .iter()
            .map(|r| {
                r["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect(),
    }
}

fn rows(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [_, width] = t.dims();
    let flat = t.into_data().try_to_vec::<f32>().unwrap();
    flat.chunks(width)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn embeddings_match_an_independent_implementation() {
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&tiny(), &device).unwrap();
    let reference = reference();
    assert_eq!(encoder.max_len, reference.max_len);
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    for (sentence, ids) in sentences.iter().zip(&reference.ids) {
        assert_eq!(&encoder.token_ids(sentence).unwrap(), ids, "{sentence}");
    }
    // The last sentence is longer than the maximum: cut, not refused.
    assert_eq!(reference.ids.last().unwrap().len(), encoder.max_len);
    // One padded batch of sentences of different lengths.
    let ours = rows(encoder.embed(&sentences, &device).unwrap());
    for ((sentence, ours), theirs) in sentences.iter().zip(&ours).zip(&reference.embeddings) {
        let c = cosine(ours, theirs);
        assert!(c >= 0.9999, "cosine {c} for {sentence:?}");
        let norm = ours.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn padding_changes_no_sentence_embedding() {
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&tiny(), &device).unwrap();
    let sentences = [
        "the cat sat",
        "a kitten was resting by the sunny window in the rain",
    ];
    let together = rows(encoder.embed(&sentences, &device).unwrap());
    for (i, sentence) in sentences.iter().enumerate() {
        let alone = rows(encoder.embed(&[sentence], &device).unwrap());
        for (a, b) in alone[0].iter().zip(&together[i]) {
            assert!((a - b).abs() < 1e-5, "{sentence:?}: {a} alone, {b} padded");
        }
    }
}

/// A copy of the tiny model's folder, with `change` applied to it.
fn broken(change: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    change(dir.path());
    dir
}

/// all-MiniLM-L6-v2's `tokenizer.json` pads every sentence to 128 pieces and cuts at 128,
/// where sentence-transformers cuts at 256: the encoder must follow neither. The same
/// settings written into the tiny model's file (padding to 64, cutting at 8) change no id and
/// no embedding.
#[test]
fn a_tokenizer_file_with_its_own_padding_and_truncation_changes_nothing() {
    let dir = broken(|d| {
        let path = d.join("tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["padding"] = serde_json::json!({
            "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"
        });
        json["truncation"] = serde_json::json!({
            "max_length": 8, "strategy": "LongestFirst", "stride": 0, "direction": "Right"
        });
        std::fs::write(path, json.to_string()).unwrap();
    });
    let device = Device::flex();
    let encoder = load(dir.path()).unwrap();
    let reference = reference();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    for (sentence, ids) in sentences.iter().zip(&reference.ids) {
        assert_eq!(&encoder.token_ids(sentence).unwrap(), ids, "{sentence}");
    }
    let ours = rows(encoder.embed(&sentences, &device).unwrap());
    for (ours, theirs) in ours.iter().zip(&reference.embeddings) {
        assert!(cosine(ours, theirs) >= 0.9999);
    }
}

fn load(dir: &Path) -> Result<SentenceEncoder, Error> {
    SentenceEncoder::load(dir, &Device::flex())
}

fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn a_model_folder_missing_a_file_is_refused_by_name() {
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = broken(|d| std::fs::remove_file(d.join(file)).unwrap());
        match load(dir.path()) {
            Err(Error::MissingModelFile { path }) => assert!(path.ends_with(file)),
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_files_are_typed_errors() {
    let dir = broken(|d| {
        let path = d.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(matches!(load(dir.path()), Err(Error::ModelFile { .. })));
    let dir = broken(|d| std::fs::write(d.join("tokenizer.json"), "{ not json").unwrap());
    assert!(matches!(load(dir.path()), Err(Error::Tokenizer { .. })));
    let dir = broken(|d| std::fs::write(d.join("config.json"), "[1, 2").unwrap());
    assert!(matches!(load(dir.path()), Err(Error::ModelFile { .. })));
}

#[test]
fn weights_that_do_not_fit_the_config_are_refused() {
    let dir = broken(|d| set_config(d, "intermediate_size", 48.into()));
    match load(dir.path()) {
        Err(Error::ModelFile { reason, .. }) => assert!(reason.contains("hape"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let dir = broken(|d| set_config(d, "num_hidden_layers", 3.into()));
    assert!(matches!(load(dir.path()), Err(Error::ModelFile { .. })));
    let dir = broken(|d| set_config(d, "num_attention_heads", 5.into()));
    assert!(matches!(
        load(dir.path()),
        Err(Error::BertConfig {
            field: "num_attention_heads",
            ..
        })
    ));
    let dir = broken(|d| set_config(d, "hidden_act", "relu".into()));
    assert!(matches!(
        load(dir.path()),
        Err(Error::BertConfig {
            field: "hidden_act",
            ..
        })
    ));
}

#[test]
fn non_finite_weights_are_refused() {
    let dir = broken(|d| {
        let path = d.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let json: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
        let start = json["encoder.layer.0.output.dense.bias"]["data_offsets"][0]
            .as_u64()
            .unwrap() as usize;
        let mut bytes = bytes;
        let at = 8 + header + start;
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
    });
    match load(dir.path()) {
        Err(Error::ModelFile { reason, .. }) => assert!(reason.contains("NaN"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_sentence_is_a_typed_error() {
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&tiny(), &device).unwrap();
    assert!(matches!(
        encoder.embed(&["the cat", "  "], &device),
        Err(Error::EmptySentence { index: 1 })
    ));
    assert!(matches!(
        encoder.embed(&[], &device),
        Err(Error::EmptySentence { .. })
    ));
}

#[test]
fn removing_heads_equals_zeroing_their_outputs() {
    let device = Device::flex();
    let encoder = SentenceEncoder::load(&tiny(), &device).unwrap();
    let tokens = encoder
        .tokenize(&["the cat sat on the warm window", "rain"], &device)
        .unwrap();
    let keep = vec![vec![0, 2], vec![1, 2, 3]];
    let pruned = encoder.model.clone().keep_heads(&keep).unwrap();
    assert_eq!(pruned.heads(), [2, 3]);
    // The reference: the whole model, the removed heads' rows of each output projection zeroed.
    let mut zeroed = encoder.model.clone();
    for (layer, keep) in zeroed.layers.iter_mut().zip(&keep) {
        let attention = &mut layer.attention;
        let width = attention.head_width;
        let rows = attention.heads * width;
        let flags: Vec<f32> = (0..rows)
            .map(|r| {
                if keep.contains(&(r / width)) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::<1>::from_floats(flags.as_slice(), &device).reshape([rows, 1]);
        let weight = attention.output.weight.val() * mask;
        attention.output.weight = burn::module::Param::from_tensor(weight);
    }
    let a = pruned
        .hidden_states(&tokens)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b = zeroed
        .hidden_states(&tokens)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "{x} pruned, {y} zeroed");
    }
    // Fewer weights: each removed head takes 4 * hidden * width weights and 3 * width biases.
    let count = |m: &ember_zoo::bert::Bert| -> usize {
        ember_tensor::param_values(m)
            .iter()
            .map(|v| v.flat.dims()[0])
            .sum()
    };
    let (hidden, width) = (32, 8);
    assert_eq!(
        count(&encoder.model) - count(&pruned),
        3 * (4 * hidden * width + 3 * width)
    );
    assert!(
        encoder
            .model
            .clone()
            .keep_heads(&[vec![0], vec![]])
            .is_err()
    );
    assert!(
        encoder
            .model
            .clone()
            .keep_heads(&[vec![1, 0], vec![0]])
            .is_err()
    );
    assert!(encoder.model.clone().keep_heads(&[vec![0]]).is_err());
}
