//! Distillation as recovery: a pruned student and a quantization-aware student fine-tuned on a
//! teacher's soft targets keep what made them small (the pruned weights stay exactly zero, the
//! QAT model converts to what it trained) while they learn from the teacher.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use burn::tensor::{Device, Tensor};
use ember_distill::loss::SoftTargetConfig;
use ember_distill::{TeacherOutputs, distill};
use ember_observe::ObserverConfig;
use ember_prune::{PruneConfig, prune};
use ember_quant::{QType, StaticConfig, WeightConfig, prepare_qat};
use ember_tensor::testing::{Blobs, seeded_lock as seeded};
use ember_tensor::{Classifier, LabeledData, TrainConfig, masks, param_values, train};
use ember_zoo::{Mlp, MlpConfig};

const CLASSES: usize = 4;

fn mlp(hidden: usize, seed: u64, device: &Device) -> Mlp {
    device.seed(seed);
    MlpConfig {
        input: Blobs::DIM,
        hidden: vec![hidden],
        classes: CLASSES,
        dropout: 0.0,
    }
    .init(device)
    .unwrap()
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate: 1e-2,
        ..TrainConfig::default()
    }
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Per cent of `data` on which `a` and `b` predict the same class.
fn agreement(a: &Mlp, b: &Mlp, data: &Blobs, device: &Device) -> f64 {
    let (x, _) = data.batch(&(0..data.len()).collect::<Vec<_>>(), device);
    let same = a.forward(x.clone()).argmax(1).equal(b.forward(x).argmax(1));
    100.0 * same.int().sum().into_scalar::<i64>() as f64 / data.len() as f64
}

#[test]
fn a_pruned_student_learns_from_the_teacher_with_its_pruned_weights_at_zero() {
    let _seeded = seeded();
    let device = Device::flex();
    let (data, test) = (Blobs::new(1024, CLASSES, 1), Blobs::new(512, CLASSES, 2));
    let teacher = train(mlp(64, 1, &device), &data, &config(8), &device)
        .unwrap()
        .0;
    let student = train(mlp(32, 2, &device), &data, &config(8), &device)
        .unwrap()
        .0;
    let (pruned, _) = prune(student, &PruneConfig::global_magnitude(0.9)).unwrap();
    let before = agreement(&pruned, &teacher, &test, &device);

    let soft = SoftTargetConfig {
        temperature: 4.0,
        alpha: 0.9,
    };
    let (distilled, _) = distill(
        pruned.clone(),
        &teacher,
        &data,
        &config(6),
        &soft,
        TeacherOutputs::Cached,
        &device,
    )
    .unwrap();
    let after = agreement(&distilled, &teacher, &test, &device);
    assert!(
        after > before + 5.0,
        "agreement with the teacher {before} % -> {after} %"
    );

    // The masks come through distillation as they went in, and every weight they cut is 0.
    let kept = masks(&pruned);
    let kept_after = masks(&distilled);
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        kept_after.keys().collect::<Vec<_>>()
    );
    assert!(!kept.is_empty());
    for value in param_values(&distilled) {
        let Some(mask) = kept.get(&value.info.path) else {
            continue;
        };
        let mask = mask.clone().into_data().try_to_vec::<bool>().unwrap();
        let mask_after = kept_after[&value.info.path].clone().into_data();
        assert_eq!(mask_after.try_to_vec::<bool>().unwrap(), mask);
        let values = value.flat.into_data().try_to_vec::<f32>().unwrap();
        let cut = mask.iter().filter(|&&k| !k).count();
        assert!(cut > 0, "{}", value.info.path);
        for (i, (&k, &v)) in mask.iter().zip(&values).enumerate() {
            assert!(k || v == 0.0, "{}[{i}] = {v} is pruned", value.info.path);
        }
    }
}

#[test]
fn a_quantization_aware_student_distils_and_converts_to_what_it_trained() {
    let _seeded = seeded();
    let device = Device::flex();
    let data = Blobs::new(512, CLASSES, 3);
    let teacher = train(mlp(64, 3, &device), &data, &config(8), &device)
        .unwrap()
        .0;
    let student = train(mlp(16, 4, &device), &data, &config(4), &device)
        .unwrap()
        .0;
    let scheme = StaticConfig {
        weights: WeightConfig {
            qtype: QType::Int4,
            ..WeightConfig::int8_per_channel()
        },
        observer: ObserverConfig::min_max(),
        ..StaticConfig::default()
    };
    let qat = prepare_qat(student, &scheme).unwrap();
    let soft = SoftTargetConfig {
        temperature: 2.0,
        alpha: 0.5,
    };
    let (trained, report) = distill(
        qat.model.clone(),
        &teacher,
        &data,
        &config(3),
        &soft,
        TeacherOutputs::OnTheFly,
        &device,
    )
    .unwrap();
    assert!(report.mean_soft_loss.is_finite() && report.mean_soft_loss > 0.0);
    // Min/max observers have seen every training input: a training batch moves no range, so
    // the fake-quantized forward of the distilled model is the converted model's.
    let (images, _) = data.batch(&(0..64).collect::<Vec<_>>(), &device);
    let during = host(trained.forward(images.clone()));
    let q = qat.convert(trained).unwrap();
    let after = host(q.model.forward(images));
    let worst = during
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "converted logits differ by {worst}");
    assert_eq!(q.weights["layers.0.weight"].scheme().qtype, QType::Int4);
}
