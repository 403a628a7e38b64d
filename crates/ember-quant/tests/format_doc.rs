//! The `ember-quant/2` file read as `docs/ember-quant-format.md` describes it, with the
//! `safetensors` crate and `serde_json` only: the layout the page documents is the one Ember
//! writes, so that another tool can read it from the page alone.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use burn::tensor::Device;
use ember_quant::{
    Quantized, StaticConfig, WeightConfig, quantize_static, quantize_weights, save_quantized,
};
use ember_tensor::testing::Blobs;
use ember_zoo::MlpConfig;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Every quantized parameter of the file at `path`, dequantized as the page says.
fn read_as_documented(path: &std::path::Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["format"], "ember-quant/2");
    let shapes: BTreeMap<String, Vec<usize>> = serde_json::from_str(&meta["shapes"]).unwrap();
    let schemes: BTreeMap<String, Value> = serde_json::from_str(&meta["schemes"]).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (path, scheme) in schemes {
        let shape = &shapes[&path];
        let numel: usize = shape.iter().product();
        let qtype = scheme["qtype"].as_str().unwrap();
        let signed = qtype.starts_with("Int");
        let bits = if qtype.ends_with('8') { 8 } else { 4 };
        let raw = file.tensor(&path).unwrap();
        assert_eq!(
            raw.dtype(),
            if signed && bits == 8 {
                Dtype::I8
            } else {
                Dtype::U8
            }
        );
        let ints: Vec<i32> = (0..numel)
            .map(|i| {
                if bits == 8 {
                    let b = raw.data()[i];
                    if signed { b as i8 as i32 } else { b as i32 }
                } else {
                    let byte = raw.data()[i / 2];
                    let nibble = if i % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                    if signed && nibble >= 8 {
                        nibble as i32 - 16
                    } else {
                        nibble as i32
                    }
                }
            })
            .collect();
        let floats = |name: String| -> Vec<f32> {
            let t = file.tensor(&name).unwrap();
            t.data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let scales = floats(format!("{path}:scale"));
        let zero_points: Vec<i32> = if scheme["mode"] == "Affine" {
            let t = file.tensor(&format!("{path}:zero_point")).unwrap();
            t.data()
                .chunks(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        } else {
            let width = scheme["bits"].as_u64().unwrap_or(bits) as i32
                - scheme["reduce_range"].as_bool().unwrap() as i32;
            let (qmin, qmax) = if signed {
                (-(1 << (width - 1)), (1 << (width - 1)) - 1)
            } else {
                (0, (1 << width) - 1)
            };
            let zero = if signed { 0 } else { (qmin + qmax + 1) / 2 };
            vec![zero; scales.len()]
        };
        let set = |i: usize| -> usize {
            let g = &scheme["granularity"];
            if g == "PerTensor" {
                return 0;
            }
            let (kind, args) = g.as_object().unwrap().iter().next().unwrap();
            let axis = args["axis"].as_u64().unwrap() as usize;
            match kind.as_str() {
                "PerChannel" => {
                    let inner: usize = shape[axis + 1..].iter().product();
                    (i / inner) % shape[axis]
                }
                "PerGroup" => {
                    let size = args["size"].as_u64().unwrap() as usize;
                    let inner: usize = shape[axis + 1..].iter().product();
                    let groups = shape[axis].div_ceil(size);
                    let along = (i / inner) % shape[axis];
                    let outer = i / (inner * shape[axis]);
                    (outer * groups + along / size) * inner + i % inner
                }
                "PerFlatGroup" => {
                    let size = args["size"].as_u64().unwrap() as usize;
                    let flat: usize = shape[axis..].iter().product();
                    (i / flat) * flat.div_ceil(size) + (i % flat) / size
                }
                other => panic!("undocumented granularity {other}"),
            }
        };
        let values = ints
            .iter()
            .enumerate()
            .map(|(i, &q)| (q - zero_points[set(i)]) as f32 * scales[set(i)])
            .collect();
        out.insert(path, values);
    }
    out
}

fn check<M: burn::module::Module>(q: &Quantized<M>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_quantized(q, &path).unwrap();
    let read = read_as_documented(&path);
    assert!(!q.weights.is_empty());
    assert_eq!(read.len(), q.weights.len());
    for (name, qtensor) in &q.weights {
        assert_eq!(read[name], qtensor.dequantize(), "{name}");
    }
}

#[test]
fn static_int8_per_channel_reads_as_documented() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(1);
    let model = MlpConfig {
        input: Blobs::DIM,
        hidden: vec![12],
        classes: 3,
        dropout: 0.0,
    }
    .init(&device)
    .unwrap();
    let q = quantize_static(
        model,
        &StaticConfig::default(),
        &Blobs::new(128, 3, 2),
        &device,
    )
    .unwrap();
    check(&q);
}

#[test]
fn int4_groups_and_affine_uint8_read_as_documented() {
    let _seeded = ember_tensor::testing::seeded_lock();
    let device = Device::flex();
    device.seed(2);
    let model = MlpConfig {
        input: Blobs::DIM,
        hidden: vec![12],
        classes: 3,
        dropout: 0.0,
    }
    .init(&device)
    .unwrap();
    // Groups of 3 along an input axis of 8 and of 12: the last group of each is shorter.
    check(&quantize_weights(model.clone(), &WeightConfig::int4_per_group(3)).unwrap());
    let affine = WeightConfig::int8_per_tensor().with_mode(ember_quant::Mode::Affine);
    let affine = WeightConfig {
        qtype: ember_quant::QType::UInt8,
        ..affine
    };
    check(&quantize_weights(model, &affine).unwrap());
}
