//! Per-tensor and per-axis statistics: min, max, abs-max, L1 and L2 norms, k-th value.
//!
//! Reductions run on the tensor's own device; only the few resulting numbers are read back.

use burn::tensor::Tensor;
use serde::Serialize;

use crate::{Error, Result};

/// Statistics of a whole tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TensorStats {
    /// Number of elements.
    pub numel: usize,
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Largest absolute value.
    pub abs_max: f32,
    /// Sum of absolute values.
    pub l1: f32,
    /// Square root of the sum of squares.
    pub l2: f32,
    /// How many elements are NaN or infinite.
    pub non_finite: usize,
}

/// Statistics of each slice along one axis (each output channel of a weight, say).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AxisStats {
    /// The axis the slices are taken along.
    pub axis: usize,
    /// Smallest value of each slice.
    pub min: Vec<f32>,
    /// Largest value of each slice.
    pub max: Vec<f32>,
    /// Largest absolute value of each slice.
    pub abs_max: Vec<f32>,
    /// L1 norm of each slice.
    pub l1: Vec<f32>,
    /// L2 norm of each slice.
    pub l2: Vec<f32>,
}

/// Statistics of the whole tensor.
pub fn tensor_stats<const D: usize>(tensor: &Tensor<D>) -> Result<TensorStats> {
    let numel = tensor.shape().num_elements();
    if numel == 0 {
        return Err(Error::Empty {
            what: "tensor".into(),
        });
    }
    let flat = tensor.clone().flatten::<1>(0, D - 1);
    let non_finite = flat.clone().is_finite().bool_not().int().sum();
    let abs = flat.clone().abs();
    let summary = Tensor::cat(
        vec![
            flat.clone().min(),
            flat.clone().max(),
            abs.clone().max(),
            abs.sum(),
            flat.square().sum().sqrt(),
            non_finite.float(),
        ],
        0,
    );
    let v = read_f32(summary)?;
    Ok(TensorStats {
        numel,
        min: v[0],
        max: v[1],
        abs_max: v[2],
        l1: v[3],
        l2: v[4],
        non_finite: v[5] as usize,
    })
}

/// Statistics of every slice `tensor[.., i, ..]` along `axis`.
pub fn axis_stats<const D: usize>(tensor: &Tensor<D>, axis: usize) -> Result<AxisStats> {
    let rows = along_axis(tensor, axis)?;
    let channels = rows.dims()[0];
    let abs = rows.clone().abs();
    let summary = Tensor::cat(
        vec![
            rows.clone().min_dim(1),
            rows.clone().max_dim(1),
            abs.clone().max_dim(1),
            abs.sum_dim(1),
            rows.square().sum_dim(1).sqrt(),
        ],
        1,
    );
    // Row-major [channels, 5]: one row per channel.
    let v = read_f32(summary)?;
    let column = |c: usize| (0..channels).map(|i| v[i * 5 + c]).collect();
    Ok(AxisStats {
        axis,
        min: column(0),
        max: column(1),
        abs_max: column(2),
        l1: column(3),
        l2: column(4),
    })
}

/// The k-th smallest value of the tensor, counting from 1 (`k = 1` is the minimum).
pub fn kth_value<const D: usize>(tensor: &Tensor<D>, k: usize) -> Result<f32> {
    let len = tensor.shape().num_elements();
    check_k(k, len)?;
    let sorted = tensor.clone().flatten::<1>(0, D - 1).sort(0);
    Ok(read_f32(sorted.slice(k - 1..k))?[0])
}

/// The k-th smallest value of every slice along `axis`, counting from 1.
pub fn kth_value_per_axis<const D: usize>(
    tensor: &Tensor<D>,
    axis: usize,
    k: usize,
) -> Result<Vec<f32>> {
    let rows = along_axis(tensor, axis)?;
    check_k(k, rows.dims()[1])?;
    let channels = rows.dims()[0];
    read_f32(rows.sort(1).slice([0..channels, k - 1..k]))
}

/// `tensor` as a matrix with one row per index of `axis`: shape `[dims[axis], rest]`.
fn along_axis<const D: usize>(tensor: &Tensor<D>, axis: usize) -> Result<Tensor<2>> {
    if axis >= D {
        return Err(Error::AxisOutOfRange { axis, rank: D });
    }
    let dims = tensor.dims();
    if dims.iter().product::<usize>() == 0 {
        return Err(Error::Empty {
            what: "tensor".into(),
        });
    }
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    Ok(tensor
        .clone()
        .reshape([outer, dims[axis], inner])
        .swap_dims(0, 1)
        .reshape([dims[axis], outer * inner]))
}

fn check_k(k: usize, len: usize) -> Result<()> {
    if k == 0 || k > len {
        return Err(Error::KOutOfRange { k, len });
    }
    Ok(())
}

/// Read a float tensor of any float dtype back as f32 values.
pub fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Data {
            reason: format!("{e:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use proptest::prelude::*;

    /// Stats of f32 sums differ from the f64 reference only by rounding.
    const REL_TOL: f32 = 1e-5;

    fn close(a: f32, b: f64) -> bool {
        let b = b as f32;
        (a - b).abs() <= REL_TOL * b.abs().max(1.0)
    }

    /// The scalar reference: plain loops in f64.
    fn reference(values: &[f32]) -> [f64; 5] {
        let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        [
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            v.iter().map(|x| x.abs()).fold(0.0, f64::max),
            v.iter().map(|x| x.abs()).sum(),
            v.iter().map(|x| x * x).sum::<f64>().sqrt(),
        ]
    }

    fn tensor(values: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    #[test]
    fn hand_computed_case() {
        let device = Device::flex();
        let t = Tensor::<2>::from_floats([[3.0, -4.0], [0.0, 1.0]], &device);
        let s = tensor_stats(&t).unwrap();
        assert_eq!((s.numel, s.min, s.max, s.abs_max), (4, -4.0, 3.0, 4.0));
        assert_eq!((s.l1, s.l2, s.non_finite), (8.0, 26f32.sqrt(), 0));
        let rows = axis_stats(&t, 0).unwrap();
        assert_eq!(rows.l1, vec![7.0, 1.0]);
        assert_eq!(rows.l2, vec![5.0, 1.0]);
        let cols = axis_stats(&t, 1).unwrap();
        assert_eq!(cols.min, vec![0.0, -4.0]);
        assert_eq!(cols.abs_max, vec![3.0, 4.0]);
        assert_eq!(kth_value(&t, 2).unwrap(), 0.0);
        assert_eq!(kth_value_per_axis(&t, 1, 2).unwrap(), vec![3.0, 1.0]);
    }

    #[test]
    fn non_finite_values_are_counted() {
        let device = Device::flex();
        let t = Tensor::<1>::from_floats([1.0, f32::NAN, f32::INFINITY], &device);
        assert_eq!(tensor_stats(&t).unwrap().non_finite, 2);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let device = Device::flex();
        let t = Tensor::<2>::zeros([2, 3], &device);
        assert_eq!(
            axis_stats(&t, 2).unwrap_err(),
            Error::AxisOutOfRange { axis: 2, rank: 2 }
        );
        assert_eq!(
            kth_value(&t, 0).unwrap_err(),
            Error::KOutOfRange { k: 0, len: 6 }
        );
        assert_eq!(
            kth_value(&t, 7).unwrap_err(),
            Error::KOutOfRange { k: 7, len: 6 }
        );
        let empty = Tensor::<2>::zeros([0, 3], &device);
        assert!(matches!(tensor_stats(&empty), Err(Error::Empty { .. })));
    }

    fn shape_and_values() -> impl Strategy<Value = ([usize; 3], Vec<f32>)> {
        (1usize..5, 1usize..6, 1usize..5).prop_flat_map(|(a, b, c)| {
            (
                Just([a, b, c]),
                prop::collection::vec(-100.0f32..100.0, a * b * c),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn tensor_stats_match_the_scalar_reference((shape, values) in shape_and_values()) {
            let s = tensor_stats(&tensor(&values, shape, &Device::flex())).unwrap();
            let r = reference(&values);
            prop_assert!(close(s.min, r[0]) && close(s.max, r[1]) && close(s.abs_max, r[2]));
            prop_assert!(close(s.l1, r[3]) && close(s.l2, r[4]));
        }

        #[test]
        fn axis_stats_match_the_scalar_reference(
            (shape, values) in shape_and_values(),
            axis in 0usize..3,
        ) {
            let t = tensor(&values, shape, &Device::flex());
            let s = axis_stats(&t, axis).unwrap();
            for i in 0..shape[axis] {
                // The slice t[.., i, ..] by plain index arithmetic on the row-major buffer.
                let slice: Vec<f32> = (0..values.len())
                    .filter(|&flat| {
                        let idx = [flat / (shape[1] * shape[2]), flat / shape[2] % shape[1], flat % shape[2]];
                        idx[axis] == i
                    })
                    .map(|flat| values[flat])
                    .collect();
                let r = reference(&slice);
                prop_assert!(close(s.min[i], r[0]) && close(s.max[i], r[1]));
                prop_assert!(close(s.abs_max[i], r[2]) && close(s.l1[i], r[3]) && close(s.l2[i], r[4]));
            }
        }

        #[test]
        fn kth_value_matches_a_sorted_copy(
            (shape, values) in shape_and_values(),
            k_frac in 0.0f64..1.0,
        ) {
            let k = 1 + (k_frac * values.len() as f64) as usize;
            let k = k.min(values.len());
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            let got = kth_value(&tensor(&values, shape, &Device::flex()), k).unwrap();
            prop_assert_eq!(got, sorted[k - 1]);
        }
    }
}
