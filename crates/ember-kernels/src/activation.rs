//! The float activations of a transformer's inference on the host: GELU (the exact, erf form)
//! and the softmax of rows, in place over `f32` slices.
//!
//! burn's CPU backends evaluate both one element at a time through `libm` (`erff`, `expf`):
//! on all-MiniLM-L6-v2 they took about a third of an int8 encoder's time, as much as its
//! integer matrix products (perf, AMD EPYC Zen 4). Here both are branch-free polynomials the
//! compiler vectorizes, compiled for AVX2 and FMA where the CPU has them
//! ([`Isa::detect`]), and split over threads for large inputs. Each function's error bound
//! is in its documentation; `crates/ember-kernels/tests/activation.rs` checks them against
//! `libm` in double precision.

use rayon::prelude::*;

use crate::simd::Isa;
use crate::{KernelError, Result};

/// Elements per parallel chunk: below this a thread costs more than it saves.
const CHUNK: usize = 1 << 15;

/// `x * Φ(x)` in place, `Φ` the standard normal distribution function: GELU as BERT defines it
/// (not its tanh approximation). Absolute error at most about `2e-7 · max(1, |x|)`; NaN stays
/// NaN, `+inf` stays `+inf`.
pub fn gelu(x: &mut [f32]) {
    gelu_on(Isa::detect(), x);
}

/// [`gelu`] with the instructions of `isa` (the tests compare every one the CPU has).
pub fn gelu_on(isa: Isa, x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|chunk| match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(cpu) => x86::gelu_avx2(cpu, chunk),
        Isa::Portable => gelu_body::<false>(chunk),
    });
}

/// The softmax of each row of `x` (`width` elements each, rows back to back), in place:
/// `exp(x - max) / Σ exp(x - max)`. A row with NaN gives NaN; a row of `-inf` only gives NaN,
/// as `0 / 0` does; an element more than about 87 below its row's maximum gives 0 (its
/// `exp` is under `f32`'s smallest normal). A `width` of 0 or one that does not divide the
/// length is an error.
pub fn softmax_rows(x: &mut [f32], width: usize) -> Result<()> {
    softmax_rows_on(Isa::detect(), x, width)
}

/// [`softmax_rows`] with the instructions of `isa`.
pub fn softmax_rows_on(isa: Isa, x: &mut [f32], width: usize) -> Result<()> {
    softmax_on(isa, x, width, None)
}

/// What attention does to its scores before their softmax: `scores / divisor + bias`, the
/// bias one row of `width` values for every `rows_per_bias` rows (BERT's padding mask: one
/// row per sentence, shared by its heads and queries).
#[derive(Debug, Clone, Copy)]
pub struct ScoreBias<'a> {
    /// What each score is divided by (`√head_width`).
    pub divisor: f32,
    /// Rows of `width` values, back to back.
    pub bias: &'a [f32],
    /// Rows of scores each bias row applies to.
    pub rows_per_bias: usize,
}

/// The softmax of each row of `(x / divisor + bias)`, in place: attention's scaling, mask
/// and softmax in one pass over the scores, where three passes over a tensor of
/// `batch · heads · tokens²` values read and wrote memory three times. Each value is computed
/// with the same operations in the same order as the three passes, so the result is the
/// same bit for bit. A `rows_per_bias` of 0, a bias that does not cover the rows or a
/// divisor that is zero or not finite is an error.
pub fn attention_softmax(x: &mut [f32], width: usize, scores: ScoreBias<'_>) -> Result<()> {
    attention_softmax_on(Isa::detect(), x, width, scores)
}

/// [`attention_softmax`] with the instructions of `isa`.
pub fn attention_softmax_on(
    isa: Isa,
    x: &mut [f32],
    width: usize,
    scores: ScoreBias<'_>,
) -> Result<()> {
    if !(scores.divisor.is_finite() && scores.divisor != 0.0) {
        return Err(KernelError::Parameter {
            what: "attention score divisor",
            value: scores.divisor.to_string(),
        });
    }
    let rows = x.len() / width.max(1);
    let per = scores.rows_per_bias;
    if per == 0 || !rows.is_multiple_of(per) || scores.bias.len() != rows / per * width {
        return Err(KernelError::Length {
            what: "attention bias (a row of the row width per `rows_per_bias` rows)",
            expected: rows.div_ceil(per.max(1)) * width,
            actual: scores.bias.len(),
        });
    }
    softmax_on(isa, x, width, Some(scores))
}

fn softmax_on(isa: Isa, x: &mut [f32], width: usize, scores: Option<ScoreBias<'_>>) -> Result<()> {
    if width == 0 || !x.len().is_multiple_of(width) {
        return Err(KernelError::Length {
            what: "softmax rows (a multiple of the row width)",
            expected: x.len().next_multiple_of(width.max(1)),
            actual: x.len(),
        });
    }
    let rows_per_chunk = (CHUNK / width).max(1);
    x.par_chunks_mut(rows_per_chunk * width)
        .enumerate()
        .for_each(|(i, chunk)| {
            let rows = Rows {
                width,
                first: i * rows_per_chunk,
                scores,
            };
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma(cpu) => x86::softmax_avx2(cpu, chunk, rows),
                Isa::Portable => softmax_body::<false>(chunk, rows),
            }
        });
    Ok(())
}

/// Where a chunk of softmax rows sits: its row width, its first row's index in the whole
/// input (which picks each row's bias), and the scaling and bias if any.
#[derive(Clone, Copy)]
struct Rows<'a> {
    width: usize,
    first: usize,
    scores: Option<ScoreBias<'a>>,
}

/// `a * b + c`, fused where the build has FMA (a software `fmaf` would be far slower).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^y`: `y = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its Taylor series to `r^7`
/// (relative error under 2e-8 there) and `2^n` built in the exponent bits. Below -87.33
/// (under the smallest normal) it is 0, above 88 it is `e^88`; NaN stays NaN.
#[inline(always)]
fn exp<const FMA: bool>(y: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = y.clamp(-87.336_55, 88.0);
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, clamped));
    let mut p = 1.0 / 5040.0;
    p = madd::<FMA>(p, r, 1.0 / 720.0);
    p = madd::<FMA>(p, r, 1.0 / 120.0);
    p = madd::<FMA>(p, r, 1.0 / 24.0);
    p = madd::<FMA>(p, r, 1.0 / 6.0);
    p = madd::<FMA>(p, r, 0.5);
    p = madd::<FMA>(p, r, 1.0);
    p = madd::<FMA>(p, r, 1.0);
    // `shifted` is 1.5 · 2^23 + n, whose lowest bits hold n: an integer subtraction reads it
    // in every lane, where `n as i32` (saturating, NaN to 0) compiled to a scalar conversion
    // per element and took most of the time.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    let e = p * scale;
    let e = if y < -87.336_55 { 0.0 } else { e };
    if y.is_nan() { y } else { e }
}

/// `erfc(a)` for `a >= 0` by Abramowitz and Stegun's 7.1.26 (absolute error at most 1.5e-7):
/// `t (a1 + t (a2 + ...)) e^{-a^2}` with `t = 1 / (1 + p a)`.
#[inline(always)]
fn erfc_nonnegative<const FMA: bool>(a: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let t = 1.0 / madd::<FMA>(P, a, 1.0);
    let mut poly = A[4];
    poly = madd::<FMA>(poly, t, A[3]);
    poly = madd::<FMA>(poly, t, A[2]);
    poly = madd::<FMA>(poly, t, A[1]);
    poly = madd::<FMA>(poly, t, A[0]);
    poly * t * exp::<FMA>(-a * a)
}

#[inline(always)]
fn gelu_body<const FMA: bool>(x: &mut [f32]) {
    for v in x {
        let value = *v;
        // Φ(x) = erfc(-x / √2) / 2: for x < 0 it is the small tail itself, for x >= 0 one
        // minus the tail, so neither side loses digits to cancellation.
        let tail = 0.5 * erfc_nonnegative::<FMA>(value.abs() * std::f32::consts::FRAC_1_SQRT_2);
        let phi = if value < 0.0 { tail } else { 1.0 - tail };
        *v = value * phi;
    }
}

/// Lanes of the reductions below: separate accumulators, so that the compiler may keep them
/// in one vector register (a single running sum would pin the order, and the loop, to scalar).
const LANES: usize = 16;

#[inline(always)]
fn softmax_body<const FMA: bool>(x: &mut [f32], rows: Rows<'_>) {
    let width = rows.width;
    for (r, row) in x.chunks_exact_mut(width).enumerate() {
        if let Some(scores) = rows.scores {
            let bias = &scores.bias[(rows.first + r) / scores.rows_per_bias * width..][..width];
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = *v / scores.divisor + b;
            }
        }
        let max = row_max(row);
        for v in row.iter_mut() {
            *v = exp::<FMA>(*v - max);
        }
        let inverse = 1.0 / row_sum(row);
        for v in row.iter_mut() {
            *v *= inverse;
        }
    }
}

/// The largest value of `row`, or NaN where it holds one (so that NaN reaches every output).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for ((m, n), &v) in lanes.iter_mut().zip(&mut nan).zip(chunk) {
            *m = if v > *m { v } else { *m };
            *n |= v.is_nan();
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in tail {
        max = if v > max { v } else { max };
    }
    if nan.iter().any(|&n| n) || tail.iter().any(|v| v.is_nan()) {
        f32::NAN
    } else {
        max
    }
}

#[inline(always)]
fn row_sum(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The bodies compiled for AVX2 and FMA; the token proves the CPU has them.
    #![allow(unsafe_code)]

    use crate::simd::CpuChecked;

    pub(super) fn gelu_avx2(_: CpuChecked, x: &mut [f32]) {
        #[target_feature(enable = "avx2,fma")]
        fn body(x: &mut [f32]) {
            super::gelu_body::<true>(x)
        }
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { body(x) }
    }

    pub(super) fn softmax_avx2(_: CpuChecked, x: &mut [f32], rows: super::Rows<'_>) {
        #[target_feature(enable = "avx2,fma")]
        fn body(x: &mut [f32], rows: super::Rows<'_>) {
            super::softmax_body::<true>(x, rows)
        }
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { body(x, rows) }
    }
}
