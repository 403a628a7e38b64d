//! Sensitivity analysis: quantize one layer at a time and measure what it costs, so that a user
//! sees which layers to keep in float.

use burn::tensor::{Device, Tensor};
use ember_tensor::{Classifier, Input, LabeledData, evaluate};
use serde::Serialize;

use crate::nn::QuantLayers;
use crate::quantize::{StaticConfig, quantize_static};
use crate::{Error, Result};

/// What quantizing one layer alone does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSensitivity {
    /// The layer's path.
    pub layer: String,
    /// Test accuracy with only this layer quantized, in percent.
    pub accuracy: f64,
    /// Its change from the float model, in percentage points.
    pub accuracy_change_pp: f64,
    /// Signal-to-quantization-noise ratio of the layer's weight, in dB:
    /// `10 log10(Σ w² / Σ (w − ŵ)²)`.
    pub weight_sqnr_db: f64,
    /// The same ratio for the model's logits on the first evaluation batch, float against
    /// this layer quantized: how much of the noise reaches the output.
    pub output_sqnr_db: f64,
}

/// For each quantizable layer, statically quantize it alone (`config` with every other layer
/// kept in float), calibrate on `calibration` and evaluate on `eval`.
pub fn sensitivity<I: Input, M: Classifier<I> + QuantLayers>(
    model: &M,
    config: &StaticConfig,
    calibration: &(impl LabeledData<I> + ?Sized),
    eval: &(impl LabeledData<I> + ?Sized),
    batch_size: usize,
    device: &Device,
) -> Result<Vec<LayerSensitivity>> {
    let float_acc = evaluate(model, eval, batch_size, device)?.accuracy;
    let probe: Vec<usize> = (0..eval.len().min(batch_size)).collect();
    let (inputs, _) = eval.batch(&probe, device);
    let float_logits = read(model.forward(inputs.clone()))?;
    // The float weights, read once: each layer's SQNR compares against its own.
    let float_weights = ember_tensor::param_values(model);
    let names: Vec<String> = model
        .clone()
        .quant_layers()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut rows = Vec::new();
    for name in &names {
        let mut alone = config.clone();
        alone.keep_float = names.iter().filter(|n| *n != name).cloned().collect();
        let q = quantize_static(model.clone(), &alone, calibration, device)?;
        let accuracy = evaluate(&q.model, eval, batch_size, device)?.accuracy;
        let weight_path = format!("{name}.weight");
        let weight_sqnr_db = match q.weights.get(&weight_path) {
            Some(w) => {
                let original = float_weights
                    .iter()
                    .find(|p| p.info.path == weight_path)
                    .ok_or_else(|| Error::UnknownLayer {
                        pattern: name.clone(),
                        available: names.join(", "),
                    })?;
                let original = ember_tensor::stats::read_f32(original.flat.clone())?;
                sqnr_db(&original, &w.dequantize())
            }
            None => f64::INFINITY,
        };
        let output_sqnr_db = sqnr_db(&float_logits, &read(q.model.forward(inputs.clone()))?);
        rows.push(LayerSensitivity {
            layer: name.clone(),
            accuracy,
            accuracy_change_pp: accuracy - float_acc,
            weight_sqnr_db,
            output_sqnr_db,
        });
    }
    Ok(rows)
}

fn read(t: Tensor<2>) -> Result<Vec<f32>> {
    Ok(ember_tensor::stats::read_f32(t)?)
}

/// `10 log10(Σ x² / Σ (x − x̂)²)`; infinite when the two are equal.
pub fn sqnr_db(signal: &[f32], approx: &[f32]) -> f64 {
    let power: f64 = signal.iter().map(|&x| (x as f64).powi(2)).sum();
    let noise: f64 = signal
        .iter()
        .zip(approx)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (power / noise).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::sqnr_db;

    #[test]
    fn sqnr_by_hand() {
        // Signal power 1 + 4 = 5, noise 0.01 + 0.04 = 0.05: ratio 100, 20 dB.
        let db = sqnr_db(&[1.0, 2.0], &[1.1, 1.8]);
        assert!((db - 20.0).abs() < 1e-4, "{db}");
        assert_eq!(sqnr_db(&[1.0], &[1.0]), f64::INFINITY);
    }
}
