//! Any burn module saved with its masks and loaded back: a module Ember does not know, its
//! masks and masked values exact after the round trip; damaged, foreign and mismatched files
//! refused with the file named.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use ember_tensor::stats::read_f32;
use ember_tensor::{Error, Masks, load_masked, masks, param_values, save_masked, set_masks};

/// A user's own module: two plain burn layers.
#[derive(Module, Debug)]
struct Net {
    first: Linear,
    second: Linear,
}

fn net(device: &Device, width: usize) -> Net {
    Net {
        first: LinearConfig::new(6, width).init(device),
        second: LinearConfig::new(width, 3).init(device),
    }
}

fn values(module: &Net) -> Vec<(String, Vec<f32>)> {
    param_values(module)
        .into_iter()
        .map(|p| (p.info.path, read_f32(p.flat).unwrap()))
        .collect()
}

#[test]
fn a_masked_module_of_any_type_round_trips() {
    let device = Device::flex();
    device.seed(1);
    let keep: Vec<bool> = (0..6 * 5).map(|i| i % 3 != 0).collect();
    let mut mask = Masks::new();
    mask.insert(
        "first.weight".into(),
        Tensor::<1, Bool>::from_data(TensorData::new(keep.clone(), [keep.len()]), &device),
    );
    let model = set_masks(net(&device, 5), &mask).unwrap();
    let expected = values(&model);
    let dir = std::env::temp_dir().join(format!("ember-masked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.masked");
    let bytes = save_masked(model.clone(), &path).unwrap();
    assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());

    device.seed(2);
    let loaded = load_masked(net(&device, 5), &path, &device).unwrap();
    assert_eq!(values(&loaded), expected);
    let restored = masks(&loaded);
    assert_eq!(restored.len(), 1);
    let back: Vec<bool> = restored["first.weight"]
        .clone()
        .into_data()
        .try_to_vec::<bool>()
        .unwrap();
    assert_eq!(back, keep);
    // The masked weights read as zeros where the mask drops them.
    let first = &expected
        .iter()
        .find(|(p, _)| p == "first.weight")
        .unwrap()
        .1;
    assert!(keep.iter().zip(first).all(|(k, v)| *k || *v == 0.0));

    // Damage anywhere in the record, another structure, another file: typed errors.
    let mut damaged = std::fs::read(&path).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let broken = dir.join("broken.masked");
    std::fs::write(&broken, &damaged).unwrap();
    assert!(matches!(
        load_masked(net(&device, 5), &broken, &device),
        Err(Error::File { reason, .. }) if reason.contains("damaged")
    ));
    assert!(matches!(
        load_masked(net(&device, 4), &path, &device),
        Err(Error::File { .. })
    ));
    std::fs::write(&broken, b"not a masked module").unwrap();
    assert!(matches!(
        load_masked(net(&device, 5), &broken, &device),
        Err(Error::File { reason, .. }) if reason.contains("ember-masked/1")
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
