//! Response-based distillation (Hinton et al. 2015): the student matches the teacher's class
//! probabilities softened at temperature T.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use super::same_shape;
use crate::{Error, Result};

/// `KL(p_teacher || p_student)` of the class distributions softened at `temperature`, summed
/// over classes and averaged over the batch (PyTorch's `kl_div(..., reduction="batchmean")`).
pub fn kl_divergence(
    student_logits: Tensor<2>,
    teacher_logits: Tensor<2>,
    temperature: f64,
) -> Result<Tensor<1>> {
    same_shape("logits", &student_logits, &teacher_logits)?;
    let log_p_student = log_softmax(student_logits.div_scalar(temperature), 1);
    let log_p_teacher = log_softmax(teacher_logits.detach().div_scalar(temperature), 1);
    let p_teacher = log_p_teacher.clone().exp();
    Ok((p_teacher * (log_p_teacher - log_p_student))
        .sum_dim(1)
        .mean())
}

/// The soft-target loss as Hinton et al. weigh it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftTargetConfig {
    /// Softening temperature T (> 0); 1 leaves the probabilities as they are.
    pub temperature: f64,
    /// Weight of the soft-target term, in [0, 1]; the label cross-entropy gets `1 - alpha`.
    pub alpha: f64,
}

impl SoftTargetConfig {
    /// Check the ranges.
    pub fn init(&self) -> Result<SoftTargetLoss> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidConfig {
                field: "temperature",
                value: self.temperature.to_string(),
                reason: "must be finite and > 0",
            });
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::InvalidConfig {
                field: "alpha",
                value: self.alpha.to_string(),
                reason: "must be in [0, 1]",
            });
        }
        Ok(SoftTargetLoss { config: *self })
    }
}

/// `alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)`.
/// The `T^2` keeps the soft term's gradients the same size whatever T (Hinton et al. 2015,
/// section 2).
#[derive(Debug, Clone, Copy)]
pub struct SoftTargetLoss {
    config: SoftTargetConfig,
}

/// The loss and its two terms, for logging.
#[derive(Debug, Clone)]
pub struct SoftTargetParts {
    /// The weighted sum that training minimizes.
    pub total: Tensor<1>,
    /// `T^2 * KL`, before weighting.
    pub soft: Tensor<1>,
    /// Cross-entropy on the labels, before weighting.
    pub hard: Tensor<1>,
}

impl SoftTargetLoss {
    /// The checked config.
    pub fn config(&self) -> SoftTargetConfig {
        self.config
    }

    /// The loss of a batch.
    pub fn forward(
        &self,
        student_logits: Tensor<2>,
        teacher_logits: Tensor<2>,
        labels: Tensor<1, Int>,
    ) -> Result<SoftTargetParts> {
        let SoftTargetConfig { temperature, alpha } = self.config;
        let device = student_logits.device();
        let hard = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(student_logits.clone(), labels);
        let soft = kl_divergence(student_logits, teacher_logits, temperature)?
            .mul_scalar(temperature * temperature);
        let total = soft.clone().mul_scalar(alpha) + hard.clone().mul_scalar(1.0 - alpha);
        Ok(SoftTargetParts { total, soft, hard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// f32 softmax and log against the f64 hand computation.
    const TOLERANCE: f32 = 1e-5;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn kl_of_a_hand_computed_case() {
        let device = Device::flex();
        // Student logits [0, ln 3] give p = [1/4, 3/4]; teacher [0, 0] gives q = [1/2, 1/2].
        // KL(q || p) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3).
        let student = Tensor::<2>::from_floats([[0.0, 3f32.ln()]], &device);
        let teacher = Tensor::<2>::from_floats([[0.0, 0.0]], &device);
        let kl = scalar(kl_divergence(student.clone(), teacher.clone(), 1.0).unwrap());
        assert!((kl - 0.5 * (4f32 / 3.0).ln()).abs() < TOLERANCE, "{kl}");

        // At T = 2 the student's logits halve: p = [1/(1+sqrt 3), sqrt 3/(1+sqrt 3)].
        let s3 = 3f64.sqrt();
        let p = [1.0 / (1.0 + s3), s3 / (1.0 + s3)];
        let expected = 0.5 * (0.5 / p[0]).ln() + 0.5 * (0.5 / p[1]).ln();
        let kl = scalar(kl_divergence(student, teacher, 2.0).unwrap());
        assert!(
            (kl - expected as f32).abs() < TOLERANCE,
            "{kl} vs {expected}"
        );
    }

    #[test]
    fn kl_is_zero_for_equal_logits_and_averages_over_the_batch() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_floats([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], &device);
        assert!(
            scalar(kl_divergence(logits.clone(), logits.clone(), 4.0).unwrap()).abs() < TOLERANCE
        );
        // Two copies of the one-row case: batchmean gives the same value.
        let student = Tensor::<2>::from_floats([[0.0, 3f32.ln()], [0.0, 3f32.ln()]], &device);
        let teacher = Tensor::<2>::zeros([2, 2], &device);
        let kl = scalar(kl_divergence(student, teacher, 1.0).unwrap());
        assert!((kl - 0.5 * (4f32 / 3.0).ln()).abs() < TOLERANCE);
    }

    #[test]
    fn soft_target_loss_weighs_its_terms() {
        let device = Device::flex();
        let student = Tensor::<2>::from_floats([[0.0, 3f32.ln()]], &device);
        let teacher = Tensor::<2>::from_floats([[0.0, 0.0]], &device);
        let labels = Tensor::<1, Int>::from_data(TensorData::from([1i64]), &device);
        let loss = SoftTargetConfig {
            temperature: 1.0,
            alpha: 0.25,
        }
        .init()
        .unwrap();
        let parts = loss.forward(student, teacher, labels).unwrap();
        // CE with label 1: -ln(3/4). Soft at T = 1: 1/2 ln(4/3).
        let (hard, soft) = ((4f32 / 3.0).ln(), 0.5 * (4f32 / 3.0).ln());
        assert!((scalar(parts.hard) - hard).abs() < TOLERANCE);
        assert!((scalar(parts.soft) - soft).abs() < TOLERANCE);
        assert!((scalar(parts.total) - (0.25 * soft + 0.75 * hard)).abs() < TOLERANCE);
    }

    #[test]
    fn soft_term_is_scaled_by_t_squared() {
        let device = Device::flex();
        let student = Tensor::<2>::from_floats([[0.3, -1.0, 2.0]], &device);
        let teacher = Tensor::<2>::from_floats([[1.0, 0.0, -1.0]], &device);
        let labels = Tensor::<1, Int>::from_data(TensorData::from([0i64]), &device);
        let loss = SoftTargetConfig {
            temperature: 5.0,
            alpha: 1.0,
        }
        .init()
        .unwrap();
        let parts = loss.forward(student, teacher, labels).unwrap();
        // KL(p_t || p_s) at T = 5 by hand, in f64.
        let softmax = |logits: [f64; 3]| {
            let e = logits.map(|l| (l / 5.0).exp());
            let sum: f64 = e.iter().sum();
            e.map(|x| x / sum)
        };
        let (p_s, p_t) = (softmax([0.3, -1.0, 2.0]), softmax([1.0, 0.0, -1.0]));
        let kl: f64 = (0..3).map(|i| p_t[i] * (p_t[i] / p_s[i]).ln()).sum();
        assert!(kl > 0.01, "{kl}");
        let total = scalar(parts.total);
        assert!(
            (total - 25.0 * kl as f32).abs() < TOLERANCE,
            "{total} against 25 * {kl}"
        );
    }

    #[test]
    fn bad_settings_and_shapes_are_typed_errors() {
        for temperature in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = SoftTargetConfig {
                temperature,
                alpha: 0.5,
            }
            .init()
            .unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidConfig {
                    field: "temperature",
                    ..
                }
            ));
        }
        for alpha in [-0.1, 1.5, f64::NAN] {
            let err = SoftTargetConfig {
                temperature: 2.0,
                alpha,
            }
            .init()
            .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { field: "alpha", .. }));
        }
        let device = Device::flex();
        let err = kl_divergence(
            Tensor::zeros([2, 10], &device),
            Tensor::zeros([2, 5], &device),
            1.0,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::ShapeMismatch {
                what: "logits",
                student: vec![2, 10],
                teacher: vec![2, 5]
            }
        );
    }
}
