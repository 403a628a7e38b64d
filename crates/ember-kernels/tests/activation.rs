//! GELU and softmax against `libm` in double precision, on every instruction set this CPU has,
//! over a grid, random values and the special ones.
#![allow(clippy::unwrap_used, missing_docs)]

use ember_kernels::activation::{ScoreBias, attention_softmax_on, gelu_on, softmax_rows_on};
use ember_kernels::simd::Isa;
use proptest::prelude::*;

fn isas() -> Vec<Isa> {
    let mut isas = vec![Isa::Portable];
    if Isa::detect() != Isa::Portable {
        isas.push(Isa::detect());
    }
    isas
}

fn gelu_reference(x: f32) -> f64 {
    let x = f64::from(x);
    x * 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

fn check_gelu(values: &[f32]) {
    for isa in isas() {
        let mut ours = values.to_vec();
        gelu_on(isa, &mut ours);
        for (&x, &y) in values.iter().zip(&ours) {
            let expected = gelu_reference(x);
            let tolerance = 3e-7 * f64::from(x.abs()).max(1.0);
            assert!(
                (f64::from(y) - expected).abs() <= tolerance,
                "{isa:?}: gelu({x}) = {y}, expected {expected}"
            );
        }
    }
}

#[test]
fn gelu_matches_the_erf_form_over_a_grid() {
    let grid: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 1e-3).collect();
    check_gelu(&grid);
    // Far out: 0 on the left (to within the tolerance), x itself on the right.
    check_gelu(&[
        -1e4, -100.0, -30.0, 30.0, 100.0, 1e4, 0.0, -0.0, 1e-30, -1e-30,
    ]);
}

#[test]
fn gelu_keeps_nan_and_infinity() {
    for isa in isas() {
        let mut x = [f32::NAN, f32::INFINITY];
        gelu_on(isa, &mut x);
        assert!(x[0].is_nan(), "{isa:?}");
        assert_eq!(x[1], f32::INFINITY, "{isa:?}");
    }
}

#[test]
fn gelu_splits_over_threads_as_one_chunk_computes() {
    // Longer than one parallel chunk: the same values whatever the split.
    let values: Vec<f32> = (0..100_000)
        .map(|i| ((i * 37) % 1000) as f32 / 97.0 - 5.0)
        .collect();
    for isa in isas() {
        let mut whole = values.clone();
        gelu_on(isa, &mut whole);
        let mut piecewise = values.clone();
        for chunk in piecewise.chunks_mut(1000) {
            gelu_on(isa, chunk);
        }
        assert_eq!(whole, piecewise, "{isa:?}");
    }
}

fn softmax_reference(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = row
        .iter()
        .map(|&v| libm::exp(f64::from(v) - f64::from(max)))
        .collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn check_softmax(values: &[f32], width: usize) {
    for isa in isas() {
        let mut ours = values.to_vec();
        softmax_rows_on(isa, &mut ours, width).unwrap();
        for (row, ours) in values.chunks(width).zip(ours.chunks(width)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for ((&expected, &y), &x) in softmax_reference(row).iter().zip(ours).zip(row) {
                // `x - max` rounded to f32 moves `exp` by up to half an ulp of the difference.
                let argument = 6e-8 * f64::from((x - max).abs());
                assert!(
                    (f64::from(y) - expected).abs() <= (1e-6 + argument) * expected + 1e-30,
                    "{isa:?}: {y} against {expected} in {row:?}"
                );
            }
        }
    }
}

#[test]
fn softmax_matches_the_double_precision_one() {
    check_softmax(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 0.0, 1.0], 4);
    // An additive mask (-10000) and a wide range.
    check_softmax(&[0.5, -10_000.0, 3.0, -10_000.0, 80.0, -80.0, 0.0, 1e-3], 4);
    // A hand-computed row: two equal values share the mass.
    let mut x = [7.0f32, 7.0];
    softmax_rows_on(Isa::detect(), &mut x, 2).unwrap();
    assert_eq!(x, [0.5, 0.5]);
}

#[test]
fn softmax_keeps_nan_and_refuses_a_bad_width() {
    for isa in isas() {
        let mut x = [1.0, f32::NAN, 2.0, 0.0, 1.0, 2.0];
        softmax_rows_on(isa, &mut x, 3).unwrap();
        assert!(x[..3].iter().all(|v| v.is_nan()), "{isa:?}: {x:?}");
        assert!(x[3..].iter().all(|v| v.is_finite()), "{isa:?}: {x:?}");
        assert!(softmax_rows_on(isa, &mut x, 4).is_err());
        assert!(softmax_rows_on(isa, &mut x, 0).is_err());
    }
}

#[test]
fn attention_softmax_is_the_three_passes_bit_for_bit() {
    // 2 sentences x 3 heads x 128 queries of 128 keys: more rows than one parallel chunk
    // (256 rows of 128), so a chunk starts inside a sentence and must still pick its bias.
    let (sentences, rows_per_sentence, width) = (2, 3 * 128, 128);
    let x: Vec<f32> = (0..sentences * rows_per_sentence * width)
        .map(|i| ((i * 7919) % 2001) as f32 / 40.0 - 25.0)
        .collect();
    // The second sentence's last 28 keys are padding.
    let bias: Vec<f32> = (0..sentences * width)
        .map(|i| if i >= width + 100 { -1.0e4 } else { 0.0 })
        .collect();
    let divisor = 32f32.sqrt();
    for isa in isas() {
        let mut three_passes = x.clone();
        for (r, row) in three_passes.chunks_mut(width).enumerate() {
            let bias = &bias[r / rows_per_sentence * width..][..width];
            for (v, &b) in row.iter_mut().zip(bias) {
                *v /= divisor;
                *v += b;
            }
        }
        softmax_rows_on(isa, &mut three_passes, width).unwrap();
        let mut fused = x.clone();
        let scores = ScoreBias {
            divisor,
            bias: &bias,
            rows_per_bias: rows_per_sentence,
        };
        attention_softmax_on(isa, &mut fused, width, scores).unwrap();
        assert_eq!(fused, three_passes, "{isa:?}");
        // Padded keys get nothing.
        let last = &fused[fused.len() - width..];
        assert!(last[100..].iter().all(|&p| p == 0.0), "{isa:?}");
        assert!(last[..100].iter().all(|&p| p > 0.0), "{isa:?}");
    }
}

#[test]
fn attention_softmax_refuses_a_bias_that_does_not_fit() {
    let mut x = vec![0.0f32; 4 * 8];
    let bias = vec![0.0f32; 2 * 8];
    let ok = ScoreBias {
        divisor: 2.0,
        bias: &bias,
        rows_per_bias: 2,
    };
    assert!(attention_softmax_on(Isa::detect(), &mut x, 8, ok).is_ok());
    for bad in [
        ScoreBias {
            rows_per_bias: 0,
            ..ok
        },
        ScoreBias {
            rows_per_bias: 3,
            ..ok
        },
        ScoreBias {
            rows_per_bias: 1,
            ..ok
        },
        ScoreBias { divisor: 0.0, ..ok },
        ScoreBias {
            divisor: f32::NAN,
            ..ok
        },
    ] {
        assert!(
            attention_softmax_on(Isa::detect(), &mut x, 8, bad).is_err(),
            "{bad:?}"
        );
    }
}

proptest! {
    #[test]
    fn gelu_matches_on_random_values(values in prop::collection::vec(-12.0f32..12.0, 1..300)) {
        check_gelu(&values);
    }

    #[test]
    fn softmax_matches_on_random_rows(
        width in 1usize..40,
        rows in 1usize..6,
        seed in prop::collection::vec(-30.0f32..30.0, 240),
    ) {
        let values: Vec<f32> = seed.iter().copied().cycle().take(width * rows).collect();
        check_softmax(&values, width);
    }
}
