//! rten-gemm's `u8` x `i8` -> `i32` GEMM as a quantized linear layer, the contender #10 asked
//! Ember's own kernels to be measured against (`cargo xtask bench rten`), and the check of
//! which of the two is exact on full-range inputs.
//!
//! rten-gemm returns `i32` sums only, so [`RtenLinear`] adds the epilogue Ember's kernels fuse:
//! `out = sa · sw[c] · Σ (a - za)(w) + bias[c]`, in a second pass over the output. Its weights
//! are prepacked once, as Ember's are, and the activation's zero point goes in per row, as
//! rten-gemm takes it.

use ember_kernels::int8::{self, Int8Kernel, PackedWeights, WeightLayout};
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix, QuantParams};
use rten_tensor::NdTensorView;

/// One quantized linear layer `[k] -> [n]` on rten-gemm: symmetric `i8` weights with a scale
/// per output column, prepacked.
pub struct RtenLinear {
    executor: GemmExecutor<u8, i8, i32>,
    packed: PackedBMatrix<i8>,
    k: usize,
    n: usize,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

impl RtenLinear {
    /// `weights` is `[k, n]` row-major (input-major, as [`WeightLayout::InputMajor`]).
    pub fn new(weights: &[i8], k: usize, n: usize, scales: Vec<f32>, bias: Vec<f32>) -> Self {
        assert_eq!(weights.len(), k * n, "weights are [k, n]");
        assert_eq!(scales.len(), n, "one scale per output column");
        assert_eq!(bias.len(), n, "one bias per output column");
        let executor = GemmExecutor::<u8, i8, i32>::default();
        let packed = executor.prepack_b(NdTensorView::from_data([k, n], weights));
        Self {
            executor,
            packed,
            k,
            n,
            scales,
            bias,
        }
    }

    /// rten-gemm's name for the kernel it picked on this CPU (`x86_64-u8i8i32-avx512`).
    pub fn kernel_name(&self) -> &str {
        self.executor.kernel_name()
    }

    /// Whether rten-gemm says its kernel can saturate (its AVX2 kernel's `vpmaddubsw`).
    pub fn may_saturate(&self) -> bool {
        self.executor.may_saturate()
    }

    /// The raw sums `Σ (a - za)·w` into `sums` (`[rows, n]`); `zero_points` holds `za` once
    /// per row, as rten-gemm takes it.
    pub fn sums(&self, a: &[u8], rows: usize, zero_points: &[u8], sums: &mut [i32]) {
        self.sums_with_weight_zero(a, rows, zero_points, None, sums);
    }

    /// [`Self::sums`] with a zero point per weight column passed at call time.
    fn sums_with_weight_zero(
        &self,
        a: &[u8],
        rows: usize,
        zero_points: &[u8],
        weight_zero_points: Option<&[i8]>,
        sums: &mut [i32],
    ) {
        let a = NdTensorView::from_data([rows, self.k], a);
        let options = GemmOptions {
            a_quant: Some(QuantParams {
                zero_point: zero_points,
            }),
            b_quant: weight_zero_points.map(|zero_point| QuantParams { zero_point }),
            ..GemmOptions::default()
        };
        self.executor
            .gemm(
                sums,
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(&self.packed),
                options,
            )
            .expect("shapes were checked at construction");
    }

    /// The whole layer: rten-gemm's sums, then the epilogue `sa · sw[c] · sum + bias[c]`.
    /// `sums` is scratch of `rows · n`.
    pub fn forward(
        &self,
        a: &[u8],
        rows: usize,
        scale: f32,
        zero_points: &[u8],
        sums: &mut [i32],
        out: &mut [f32],
    ) {
        self.sums(a, rows, zero_points, sums);
        for (sum_row, out_row) in sums.chunks_exact(self.n).zip(out.chunks_exact_mut(self.n)) {
            for (((o, &s), &w_scale), &b) in out_row
                .iter_mut()
                .zip(sum_row)
                .zip(&self.scales)
                .zip(&self.bias)
            {
                *o = s as f32 * (scale * w_scale) + b;
            }
        }
    }
}

/// The largest error against the plain triple loop of each integer GEMM, on one full-range
/// product: activations over all of `0..=255`, weights over all of `-127..=127`.
#[derive(Debug, Clone)]
pub struct Exactness {
    /// `[rows, k] x [k, n]`.
    pub shape: [usize; 3],
    /// rten-gemm's kernel on this CPU.
    pub rten_kernel: String,
    /// Whether rten-gemm says that kernel may saturate.
    pub rten_may_saturate: bool,
    /// rten-gemm with prepacked weights, zero points 0 on both sides.
    pub rten_max_error: i64,
    /// rten-gemm with the activation's zero point 128 (Ember's affine inputs).
    pub rten_zero_point_max_error: i64,
    /// rten-gemm with prepacked weights and a weight zero point of 3 passed at call time: the
    /// issue's warning that prepacked weights may ignore it.
    pub rten_weight_zero_point_max_error: i64,
    /// Every Ember kernel this CPU runs, by name, with its largest error (zero points 0).
    pub ember_max_error: Vec<(&'static str, i64)>,
}

/// A deterministic spread over `range`: value `i` of `n`, scrambled.
fn spread(n: usize, seed: u64, lo: i32, hi: i32) -> impl Iterator<Item = i32> {
    let width = (hi - lo + 1) as u64;
    (0..n as u64).map(move |i| {
        let h = (i ^ (seed << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        lo + (h % width) as i32
    })
}

/// Every GEMM's largest error on a full-range `[rows, k] x [k, n]` product. The inputs put the
/// extremes side by side often (a quarter of the activations 255, the weights ±127), which is
/// where a saturating `i16` pair sum (`255 · 127 · 2 > 32767`) goes wrong.
pub fn exactness(rows: usize, k: usize, n: usize) -> Exactness {
    let a: Vec<u8> = spread(rows * k, 1, 0, 255)
        .enumerate()
        .map(|(i, v)| if i % 4 == 0 { 255 } else { v as u8 })
        .collect();
    let w: Vec<i8> = spread(k * n, 2, -127, 127)
        .enumerate()
        .map(|(i, v)| match i % 4 {
            0 => 127,
            1 => -127,
            _ => v as i8,
        })
        .collect();
    let reference: Vec<i64> = int8::reference_sums(&a, rows, &w, k, n)
        .into_iter()
        .map(i64::from)
        .collect();
    let max_error = |got: &[i32], want: &[i64]| -> i64 {
        got.iter()
            .zip(want)
            .map(|(&g, &r)| (i64::from(g) - r).abs())
            .max()
            .unwrap_or(0)
    };
    let rten = RtenLinear::new(&w, k, n, vec![1.0; n], vec![0.0; n]);
    let mut sums = vec![0i32; rows * n];
    rten.sums(&a, rows, &vec![0; rows], &mut sums);
    let rten_max_error = max_error(&sums, &reference);

    // With zero points: Σ (a - za)(w - zw), in i64 so the reference cannot overflow.
    let shifted = |za: i64, zw: i64| -> Vec<i64> {
        let mut out = vec![0i64; rows * n];
        for r in 0..rows {
            for c in 0..n {
                out[r * n + c] = (0..k)
                    .map(|i| (i64::from(a[r * k + i]) - za) * (i64::from(w[i * n + c]) - zw))
                    .sum();
            }
        }
        out
    };
    rten.sums(&a, rows, &vec![128; rows], &mut sums);
    let rten_zero_point_max_error = max_error(&sums, &shifted(128, 0));
    rten.sums_with_weight_zero(&a, rows, &vec![0; rows], Some(&vec![3; n]), &mut sums);
    let rten_weight_zero_point_max_error = max_error(&sums, &shifted(0, 3));

    let packed = PackedWeights::new(&w, k, n, WeightLayout::InputMajor, &[1.0], &[0])
        .expect("valid weights");
    let ember_max_error = Int8Kernel::available()
        .into_iter()
        .map(|kernel| {
            let mut out = vec![0i32; rows * n];
            int8::gemm_sums(kernel, &a, rows, &packed, &mut out).expect("shapes agree");
            (kernel.name(), max_error(&out, &reference))
        })
        .collect();
    Exactness {
        shape: [rows, k, n],
        rten_kernel: rten.kernel_name().to_string(),
        rten_may_saturate: rten.may_saturate(),
        rten_max_error,
        rten_zero_point_max_error,
        rten_weight_zero_point_max_error,
        ember_max_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrapper computes the layer Ember's kernels compute: against the dequantized layer
    /// summed in `f64` by hand, with a non-zero activation zero point. Activations stay within
    /// 7 bits when rten-gemm says its kernel saturates, where it is exact.
    #[test]
    fn rten_linear_is_the_quantized_layer() {
        let (rows, k, n) = (5, 37, 19);
        let a_max = if RtenLinear::new(&[0; 1], 1, 1, vec![1.0], vec![0.0]).may_saturate() {
            127
        } else {
            255
        };
        let a: Vec<u8> = spread(rows * k, 3, 0, a_max).map(|v| v as u8).collect();
        let w: Vec<i8> = spread(k * n, 4, -127, 127).map(|v| v as i8).collect();
        let scales: Vec<f32> = (0..n).map(|c| 0.01 + c as f32 * 1e-3).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.1 - 1.0).collect();
        let (scale, zero_point) = (0.02f32, 100u8);
        let layer = RtenLinear::new(&w, k, n, scales.clone(), bias.clone());
        let mut sums = vec![0; rows * n];
        let mut out = vec![0.0; rows * n];
        layer.forward(
            &a,
            rows,
            scale,
            &vec![zero_point; rows],
            &mut sums,
            &mut out,
        );
        for r in 0..rows {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| {
                        (f64::from(a[r * k + i]) - f64::from(zero_point)) * f64::from(w[i * n + c])
                    })
                    .sum();
                let want = dot * f64::from(scale) * f64::from(scales[c]) + f64::from(bias[c]);
                let got = f64::from(out[r * n + c]);
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "row {r} column {c}: {got} against {want}"
                );
            }
        }
    }

    /// Ember's kernels are exact at full range, whatever rten-gemm's kernel is on this CPU.
    #[test]
    fn ember_kernels_are_exact_where_rten_gemm_is_measured() {
        let report = exactness(7, 768, 48);
        assert!(!report.ember_max_error.is_empty());
        for (kernel, error) in &report.ember_max_error {
            assert_eq!(*error, 0, "{kernel}");
        }
        if !report.rten_may_saturate {
            assert_eq!(report.rten_max_error, 0, "{}", report.rten_kernel);
            assert_eq!(report.rten_zero_point_max_error, 0);
        }
    }
}
