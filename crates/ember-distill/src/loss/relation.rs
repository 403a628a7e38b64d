//! Relation-based distillation (RKD, Park et al. 2019): the student matches the structure of
//! the teacher's embedding of a batch (distances between pairs, angles within triplets) rather
//! than the embeddings themselves, so the two may have different widths.
//!
//! Both follow the authors' reference code: distances normalized by their mean over distinct
//! pairs, unit difference vectors for angles, smooth L1 averaged over every entry.

use burn::tensor::Tensor;

use super::smooth_l1;
use crate::{Error, Result};

/// Smallest squared distance (and norm) used, so that identical samples give no NaN gradients.
const EPSILON: f64 = 1e-12;

/// RKD distance loss between student `[batch, d_s]` and teacher `[batch, d_t]` embeddings.
pub fn rkd_distance_loss(student: Tensor<2>, teacher: Tensor<2>) -> Result<Tensor<1>> {
    check_batch("rkd distance loss", &student, &teacher, 2)?;
    let student = normalized_distances(student);
    let teacher = normalized_distances(teacher.detach());
    Ok(smooth_l1(student, teacher))
}

/// RKD angle loss between student `[batch, d_s]` and teacher `[batch, d_t]` embeddings.
pub fn rkd_angle_loss(student: Tensor<2>, teacher: Tensor<2>) -> Result<Tensor<1>> {
    check_batch("rkd angle loss", &student, &teacher, 3)?;
    Ok(smooth_l1(angles(student), angles(teacher.detach())))
}

fn check_batch(
    what: &'static str,
    student: &Tensor<2>,
    teacher: &Tensor<2>,
    needed: usize,
) -> Result<()> {
    let (s, t) = (student.dims()[0], teacher.dims()[0]);
    if s != t {
        return Err(Error::ShapeMismatch {
            what,
            student: student.dims().to_vec(),
            teacher: teacher.dims().to_vec(),
        });
    }
    if s < needed {
        return Err(Error::BatchTooSmall {
            what,
            needed,
            got: s,
        });
    }
    Ok(())
}

/// Euclidean distances between every pair of rows, divided by their mean over distinct pairs.
fn normalized_distances(x: Tensor<2>) -> Tensor<2> {
    let n = x.dims()[0];
    let squared_norms = x.clone().square().sum_dim(1); // [n, 1]
    let gram = x.clone().matmul(x.transpose());
    let squared = squared_norms.clone() + squared_norms.transpose() - gram.mul_scalar(2.0);
    let off_diagonal = Tensor::<2>::eye(n, &squared.device()).neg().add_scalar(1.0);
    let distances = squared.clamp_min(EPSILON).sqrt() * off_diagonal;
    let mean = distances.clone().sum().div_scalar((n * (n - 1)) as f64);
    distances / mean.unsqueeze::<2>()
}

/// `angles[j, i, k]` = cosine of the angle at sample j between samples i and k.
fn angles(x: Tensor<2>) -> Tensor<3> {
    let [n, d] = x.dims();
    // differences[j, i] = x[i] - x[j]
    let differences = x.clone().unsqueeze_dim::<3>(0).expand([n, n, d])
        - x.unsqueeze_dim::<3>(1).expand([n, n, d]);
    let norms = differences
        .clone()
        .square()
        .sum_dim(2)
        .sqrt()
        .clamp_min(EPSILON.sqrt());
    let unit = differences / norms;
    unit.clone().matmul(unit.swap_dims(1, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use proptest::prelude::*;

    /// f32 tensor arithmetic against the f64 scalar reference.
    const TOLERANCE: f64 = 1e-4;

    // Scalar references, written from the paper's definitions with plain loops.

    fn huber(a: f64, b: f64) -> f64 {
        let d = (a - b).abs();
        if d < 1.0 { 0.5 * d * d } else { d - 0.5 }
    }

    fn distance(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    fn reference_distances(x: &[Vec<f64>]) -> Vec<f64> {
        let n = x.len();
        let mut d: Vec<f64> = (0..n * n)
            .map(|k| {
                if k / n == k % n {
                    0.0
                } else {
                    distance(&x[k / n], &x[k % n])
                }
            })
            .collect();
        let mean = d.iter().sum::<f64>() / (n * (n - 1)) as f64;
        d.iter_mut().for_each(|v| *v /= mean);
        d
    }

    fn reference_distance_loss(s: &[Vec<f64>], t: &[Vec<f64>]) -> f64 {
        let (ds, dt) = (reference_distances(s), reference_distances(t));
        ds.iter().zip(&dt).map(|(a, b)| huber(*a, *b)).sum::<f64>() / ds.len() as f64
    }

    fn reference_angles(x: &[Vec<f64>]) -> Vec<f64> {
        let n = x.len();
        let unit = |i: usize, j: usize| -> Vec<f64> {
            let diff: Vec<f64> = x[i].iter().zip(&x[j]).map(|(a, b)| a - b).collect();
            let norm = diff.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
            diff.iter().map(|v| v / norm).collect()
        };
        let mut out = Vec::with_capacity(n * n * n);
        for j in 0..n {
            for i in 0..n {
                for k in 0..n {
                    out.push(unit(i, j).iter().zip(unit(k, j)).map(|(a, b)| a * b).sum());
                }
            }
        }
        out
    }

    fn reference_angle_loss(s: &[Vec<f64>], t: &[Vec<f64>]) -> f64 {
        let (a, b) = (reference_angles(s), reference_angles(t));
        a.iter().zip(&b).map(|(x, y)| huber(*x, *y)).sum::<f64>() / a.len() as f64
    }

    fn tensor(rows: &[Vec<f64>], device: &Device) -> Tensor<2> {
        let d = rows[0].len();
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), d]), device)
    }

    #[test]
    fn hand_computed_distance_case() {
        let device = Device::flex();
        // Teacher: a 3-4-5 right triangle; distances 3, 4, 5, mean 4 -> 0.75, 1, 1.25.
        // Student: an equilateral triangle; all normalized distances 1.
        let teacher = vec![vec![0.0, 0.0], vec![3.0, 0.0], vec![0.0, 4.0]];
        let h = 3f64.sqrt() / 2.0;
        let student = vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![0.5, h]];
        // Off-diagonal differences 0.25 (twice), 0 (twice), 0.25 (twice): huber 0.03125 each
        // for the four non-zero ones, over 9 entries.
        let expected = 4.0 * 0.5 * 0.25f64.powi(2) / 9.0;
        assert!((reference_distance_loss(&student, &teacher) - expected).abs() < 1e-12);
        let got = rkd_distance_loss(tensor(&student, &device), tensor(&teacher, &device)).unwrap();
        assert!((got.into_scalar::<f32>() as f64 - expected).abs() < TOLERANCE);
    }

    #[test]
    fn hand_computed_angle_case() {
        let device = Device::flex();
        // Right angle at sample 0 for the teacher, 60 degrees for the equilateral student.
        let teacher = vec![vec![0.0, 0.0], vec![3.0, 0.0], vec![0.0, 4.0]];
        let h = 3f64.sqrt() / 2.0;
        let student = vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![0.5, h]];
        let expected = reference_angle_loss(&student, &teacher);
        let got = rkd_angle_loss(tensor(&student, &device), tensor(&teacher, &device)).unwrap();
        assert!((got.into_scalar::<f32>() as f64 - expected).abs() < TOLERANCE);
        // Scaling and translating an embedding changes neither its distances (normalized)
        // nor its angles.
        let moved: Vec<Vec<f64>> = teacher
            .iter()
            .map(|r| vec![r[0] * 7.0 + 1.0, r[1] * 7.0 - 2.0])
            .collect();
        let d = rkd_distance_loss(tensor(&moved, &device), tensor(&teacher, &device)).unwrap();
        let a = rkd_angle_loss(tensor(&moved, &device), tensor(&teacher, &device)).unwrap();
        assert!(d.into_scalar::<f32>().abs() < 1e-5 && a.into_scalar::<f32>().abs() < 1e-5);
    }

    #[test]
    fn batches_must_pair_up_and_be_large_enough() {
        let device = Device::flex();
        let err = rkd_distance_loss(
            Tensor::zeros([4, 3], &device),
            Tensor::zeros([5, 3], &device),
        )
        .unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }));
        let err = rkd_angle_loss(Tensor::ones([2, 3], &device), Tensor::ones([2, 8], &device))
            .unwrap_err();
        assert_eq!(
            err,
            Error::BatchTooSmall {
                what: "rkd angle loss",
                needed: 3,
                got: 2
            }
        );
    }

    fn embeddings(n: usize, d: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
        prop::collection::vec(prop::collection::vec(-3.0f64..3.0, d), n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn losses_match_the_scalar_reference(
            (student, teacher) in (3usize..7).prop_flat_map(|n| (embeddings(n, 4), embeddings(n, 6)))
        ) {
            // Points too close together make the normalization ill-conditioned in f32.
            let spread = |x: &[Vec<f64>]| (0..x.len()).all(|i| (0..i).all(|j| distance(&x[i], &x[j]) > 0.1));
            prop_assume!(spread(&student) && spread(&teacher));
            let device = Device::flex();
            let d = rkd_distance_loss(tensor(&student, &device), tensor(&teacher, &device)).unwrap();
            prop_assert!((d.into_scalar::<f32>() as f64 - reference_distance_loss(&student, &teacher)).abs() < TOLERANCE);
            let a = rkd_angle_loss(tensor(&student, &device), tensor(&teacher, &device)).unwrap();
            prop_assert!((a.into_scalar::<f32>() as f64 - reference_angle_loss(&student, &teacher)).abs() < TOLERANCE);
        }
    }
}
