//! Binary layers' kernels: vectors of ±1 packed one bit each, and their products by XNOR and
//! popcount. For two ±1 vectors of length `k` packed as bits (1 for +1), the dot product is
//! `k - 2 · popcount(a xor w)`: a 64-element multiply-add becomes one xor and one popcount.
//!
//! Kernels, chosen at run time ([`BinaryKernel::detect`]): AVX-512 `VPOPCNTDQ` (eight words per
//! instruction), the scalar `POPCNT` instruction, which every AVX2 CPU has (one word per
//! instruction; a `vpshufb` nibble lookup was not written: at the row lengths of MNIST models,
//! 13 to 16 words, a 256-bit lookup saves little over one `POPCNT` per word), and a portable one
//! that lets the compiler count bits without the instruction.

use rayon::prelude::*;

use crate::int8::ConvShape;
pub use crate::simd::CpuChecked;
use crate::{KernelError, Result, check_len};

/// Rows of ±1 values packed one bit each: bit `c % 64` of word `c / 64` of row `r` is 1 where
/// element `(r, c)` is +1 (values `>= 0`, so that zero, which has no sign, binarizes to +1 as
/// in XNOR-Net) and 0 where it is -1. The padding bits past `len` are 0 in every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSigns {
    rows: usize,
    len: usize,
    words: usize,
    bits: Vec<u64>,
}

impl PackedSigns {
    /// The signs of row-major `rows x len` values; a NaN has no sign and is an error.
    pub fn from_values(rows: usize, len: usize, values: &[f32]) -> Result<Self> {
        check_len("values", rows.saturating_mul(len), values.len())?;
        if let Some(&bad) = values.iter().find(|v| v.is_nan()) {
            return Err(KernelError::Parameter {
                what: "value to binarize",
                value: bad.to_string(),
            });
        }
        let words = len.div_ceil(64);
        let mut bits = vec![0u64; rows * words];
        for (row, packed) in values
            .chunks_exact(len.max(1))
            .zip(bits.chunks_exact_mut(words.max(1)))
        {
            pack_row(row, packed);
        }
        Ok(Self {
            rows,
            len,
            words,
            bits,
        })
    }

    /// Rows of `len` signs from their packed words, as [`PackedSigns::words`] gives them (a
    /// file's): `rows · ceil(len / 64)` words whose padding bits past `len` are 0, else an
    /// error.
    pub fn from_words(rows: usize, len: usize, bits: Vec<u64>) -> Result<Self> {
        let words = len.div_ceil(64);
        check_len("packed sign words", rows.saturating_mul(words), bits.len())?;
        let tail = len % 64;
        if tail != 0 {
            let padding = !0u64 << tail;
            if bits
                .chunks_exact(words)
                .any(|row| row[words - 1] & padding != 0)
            {
                return Err(KernelError::Parameter {
                    what: "packed signs' padding bits",
                    value: "set".into(),
                });
            }
        }
        Ok(Self {
            rows,
            len,
            words,
            bits,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether rows hold no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the packed bits: one bit per element, rows padded to 64.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    /// The packed words, row after row.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// Element `(r, c)`: +1 or -1.
    pub fn sign(&self, r: usize, c: usize) -> i32 {
        let word = self.bits[r * self.words + c / 64];
        if word >> (c % 64) & 1 == 1 { 1 } else { -1 }
    }

    fn row(&self, r: usize) -> &[u64] {
        &self.bits[r * self.words..(r + 1) * self.words]
    }
}

fn pack_row(row: &[f32], packed: &mut [u64]) {
    for (word, chunk) in packed.iter_mut().zip(row.chunks(64)) {
        *word = chunk
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &v)| w | (u64::from(v >= 0.0) << i));
    }
}

/// Which XNOR-popcount kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKernel {
    /// Plain Rust; the compiler counts bits without the `POPCNT` instruction.
    Portable,
    /// The scalar `POPCNT` instruction, one 64-bit word at a time.
    #[cfg(target_arch = "x86_64")]
    Popcnt(CpuChecked),
    /// AVX-512 `VPOPCNTDQ`: eight words per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx512(CpuChecked),
}

impl BinaryKernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::avx512()
            .or_else(Self::popcnt)
            .unwrap_or(Self::Portable)
    }

    /// The `POPCNT` kernel, if the CPU has the instruction.
    pub fn popcnt() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            return Some(Self::Popcnt(CpuChecked(())));
        }
        None
    }

    /// The AVX-512 kernel, if the CPU has AVX-512 F and VPOPCNTDQ.
    pub fn avx512() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        {
            return Some(Self::Avx512(CpuChecked(())));
        }
        None
    }

    /// Every kernel this CPU runs, portable first.
    pub fn available() -> Vec<Self> {
        std::iter::once(Self::Portable)
            .chain(Self::popcnt())
            .chain(Self::avx512())
            .collect()
    }

    /// Its name in reports: `portable`, `popcnt`, `avx512_vpopcntdq`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Self::Popcnt(_) => "popcnt",
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => "avx512_vpopcntdq",
        }
    }

    /// `popcount(a xor w)` summed over the words of two rows of equal length.
    fn mismatches(self, a: &[u64], w: &[u64]) -> u32 {
        match self {
            Self::Portable => mismatches_portable(a, w),
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: the token is made only by `popcnt()`, after checking the CPU has POPCNT.
            Self::Popcnt(_) => unsafe { mismatches_popcnt(a, w) },
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: the token is made only by `avx512()`, after checking AVX-512 F and
            // VPOPCNTDQ.
            Self::Avx512(_) => unsafe { mismatches_avx512(a, w) },
        }
    }
}

#[inline(always)]
fn mismatches_portable(a: &[u64], w: &[u64]) -> u32 {
    a.iter().zip(w).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn mismatches_popcnt(a: &[u64], w: &[u64]) -> u32 {
    // The same loop; with the feature enabled `count_ones` is one instruction.
    mismatches_portable(a, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn mismatches_avx512(a: &[u64], w: &[u64]) -> u32 {
    use std::arch::x86_64::{
        _mm512_add_epi64, _mm512_loadu_si512, _mm512_popcnt_epi64, _mm512_reduce_add_epi64,
        _mm512_setzero_si512, _mm512_xor_si512,
    };
    let (a8, w8) = (a.chunks_exact(8), w.chunks_exact(8));
    let tail = mismatches_portable(a8.remainder(), w8.remainder());
    let mut sum = _mm512_setzero_si512();
    for (x, y) in a8.zip(w8) {
        #[allow(unsafe_code)]
        // SAFETY: each chunk holds exactly eight u64, the 64 bytes an unaligned load reads.
        let (x, y) = unsafe {
            (
                _mm512_loadu_si512(x.as_ptr().cast()),
                _mm512_loadu_si512(y.as_ptr().cast()),
            )
        };
        sum = _mm512_add_epi64(sum, _mm512_popcnt_epi64(_mm512_xor_si512(x, y)));
    }
    // At most 64 bits per word: the sum of a row of fewer than 2^26 words fits in u32.
    _mm512_reduce_add_epi64(sum) as u32 + tail
}

/// Products from which [`xnor_gemm`] splits its rows across threads (words x rows x columns).
const PARALLEL_MIN_WORDS: usize = 1 << 16;

/// `out[i * n + j] = Σ_c a(i, c) · w(j, c)` for ±1 rows of `a` (`m` of them) and `w` (`n`):
/// `len - 2 · popcount(a_i xor w_j)`, exact.
pub fn xnor_gemm(
    kernel: BinaryKernel,
    a: &PackedSigns,
    w: &PackedSigns,
    out: &mut [i32],
) -> Result<()> {
    check_len("weight row length", a.len, w.len)?;
    check_len("output", a.rows * w.rows, out.len())?;
    if w.rows == 0 {
        return Ok(());
    }
    let len = i32::try_from(a.len).map_err(|_| KernelError::TooLarge(a.len))?;
    let row = |(i, out_row): (usize, &mut [i32])| {
        let x = a.row(i);
        for (j, o) in out_row.iter_mut().enumerate() {
            *o = len - 2 * kernel.mismatches(x, w.row(j)) as i32;
        }
    };
    if a.words * a.rows * w.rows >= PARALLEL_MIN_WORDS {
        out.par_chunks_mut(w.rows).enumerate().for_each(row);
    } else {
        out.chunks_mut(w.rows).enumerate().for_each(row);
    }
    Ok(())
}

/// A binary fully connected layer on a batch of float inputs, as XNOR-Net computes it: each
/// input row `x_i` binarized to `sign(x_i)` with its scale `mean |x_i|`, times the binary weight
/// rows (`weights`, one row of `d_input` signs per output) with their scales `alpha`, plus
/// `bias`: `out[i, j] = mean|x_i| · alpha_j · (sign(x_i) · sign(w_j)) + bias_j`, row-major
/// `batch x d_output`.
pub fn binary_linear(
    kernel: BinaryKernel,
    x: &[f32],
    batch: usize,
    weights: &PackedSigns,
    alpha: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let (k, n) = (weights.len, weights.rows);
    check_len("input batch", batch.saturating_mul(k), x.len())?;
    check_len("weight scales", n, alpha.len())?;
    if let Some(bias) = bias {
        check_len("bias", n, bias.len())?;
    }
    if let Some(&bad) = x.iter().find(|v| v.is_nan()) {
        return Err(KernelError::Parameter {
            what: "value to binarize",
            value: bad.to_string(),
        });
    }
    let len = i32::try_from(k).map_err(|_| KernelError::TooLarge(k))?;
    let mut out = vec![0.0f32; batch * n];
    if n == 0 {
        return Ok(out);
    }
    // Each sample's row is packed, scaled and multiplied in one pass on one thread, so that
    // packing splits across threads with the products.
    let row = |(i, out_row): (usize, &mut [f32])| {
        let input = &x[i * k..(i + 1) * k];
        let mut packed = vec![0u64; weights.words];
        pack_row(input, &mut packed);
        let beta = input.iter().map(|v| v.abs()).sum::<f32>() / k.max(1) as f32;
        for (j, o) in out_row.iter_mut().enumerate() {
            let dot = len - 2 * kernel.mismatches(&packed, weights.row(j)) as i32;
            *o = beta * alpha[j] * dot as f32 + bias.map_or(0.0, |b| b[j]);
        }
    };
    if weights.words * batch * n >= PARALLEL_MIN_WORDS {
        out.par_chunks_mut(n).enumerate().for_each(row);
    } else {
        out.chunks_mut(n).enumerate().for_each(row);
    }
    Ok(out)
}

/// A binary convolution on a batch of float images `[batch, channels, height, width]`, as
/// XNOR-Net computes it with one input scale per image: each image binarized to `sign(x)`
/// with its scale `β = mean |x|`, the padding binarized as the sign of 0.0 (+1), each window's
/// signs against the filters' (`weights`: one row of `channels · kh · kw` signs per output
/// channel, in burn's `[in, kh, kw]` order) with their scales `alpha`, plus `bias`:
/// `out[b, o, y, x] = β_b · α_o · (sign(window) · sign(w_o)) + bias_o`, row-major
/// `[batch, outputs, oh, ow]`. Images split across threads.
pub fn binary_conv2d(
    kernel: BinaryKernel,
    images: &[f32],
    batch: usize,
    shape: &ConvShape,
    weights: &PackedSigns,
    alpha: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let [oh, ow] = shape.output()?;
    let (depth, outputs) = (shape.depth(), weights.rows);
    check_len("binary filter depth", depth, weights.len)?;
    let plane = shape.channels * shape.height * shape.width;
    check_len("input batch", batch.saturating_mul(plane), images.len())?;
    check_len("weight scales", outputs, alpha.len())?;
    if let Some(bias) = bias {
        check_len("bias", outputs, bias.len())?;
    }
    if let Some(&bad) = images.iter().find(|v| v.is_nan()) {
        return Err(KernelError::Parameter {
            what: "value to binarize",
            value: bad.to_string(),
        });
    }
    let len = i32::try_from(depth).map_err(|_| KernelError::TooLarge(depth))?;
    let positions = oh * ow;
    let mut out = vec![0.0f32; batch * outputs * positions];
    if outputs == 0 || positions == 0 {
        return Ok(out);
    }
    let [kh, kw] = shape.kernel;
    let [(top, _), (left, _)] = shape.padding;
    let image = |(b, out): (usize, &mut [f32])| {
        let x = &images[b * plane..(b + 1) * plane];
        let beta = x.iter().map(|v| v.abs()).sum::<f32>() / plane.max(1) as f32;
        let mut window = vec![0u64; weights.words];
        for y in 0..oh {
            for xo in 0..ow {
                window.fill(0);
                let mut bit = 0;
                for c in 0..shape.channels {
                    let channel = &x[c * shape.height * shape.width..];
                    for i in 0..kh {
                        let row = (y * shape.stride[0] + i * shape.dilation[0]).checked_sub(top);
                        for j in 0..kw {
                            let col =
                                (xo * shape.stride[1] + j * shape.dilation[1]).checked_sub(left);
                            let value = match (row, col) {
                                (Some(r), Some(c)) if r < shape.height && c < shape.width => {
                                    channel[r * shape.width + c]
                                }
                                // Padding: 0.0, whose sign is +1.
                                _ => 0.0,
                            };
                            window[bit / 64] |= u64::from(value >= 0.0) << (bit % 64);
                            bit += 1;
                        }
                    }
                }
                let position = y * ow + xo;
                for o in 0..outputs {
                    let dot = len - 2 * kernel.mismatches(&window, weights.row(o)) as i32;
                    out[o * positions + position] =
                        beta * alpha[o] * dot as f32 + bias.map_or(0.0, |b| b[o]);
                }
            }
        }
    };
    let per_image = outputs * positions;
    if weights.words * batch * per_image >= PARALLEL_MIN_WORDS {
        out.par_chunks_mut(per_image).enumerate().for_each(image);
    } else {
        out.chunks_mut(per_image).enumerate().for_each(image);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed);
                (h % 17) as f32 - 8.0
            })
            .collect()
    }

    /// The ±1 dot products by a plain double loop.
    fn reference(a: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<i32> {
        let sign = |v: f32| if v >= 0.0 { 1 } else { -1 };
        let mut out = vec![0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|c| sign(a[i * k + c]) * sign(w[j * k + c]))
                    .sum();
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every kernel the CPU runs gives exactly the double loop's products, for row lengths
        /// around word and vector boundaries (the padding bits never count).
        #[test]
        fn every_kernel_matches_the_double_loop(
            m in 0usize..6, n in 1usize..9, k in 1usize..700, seed in any::<u32>()
        ) {
            let (a, w) = (values(m * k, seed), values(n * k, seed ^ 0x5555));
            let want = reference(&a, &w, m, n, k);
            let (pa, pw) = (PackedSigns::from_values(m, k, &a).unwrap(), PackedSigns::from_values(n, k, &w).unwrap());
            for kernel in BinaryKernel::available() {
                let mut got = vec![0; m * n];
                xnor_gemm(kernel, &pa, &pw, &mut got).unwrap();
                prop_assert_eq!(&got, &want, "{}", kernel.name());
            }
        }
    }

    #[test]
    fn signs_by_hand_and_bad_inputs() {
        // +1 where >= 0: 0.0 and -0.0 both count as +1 (-0.0 >= 0.0 in IEEE).
        let p = PackedSigns::from_values(1, 4, &[0.5, -2.0, 0.0, -0.0]).unwrap();
        assert_eq!(
            (0..4).map(|c| p.sign(0, c)).collect::<Vec<_>>(),
            vec![1, -1, 1, 1]
        );
        assert_eq!(p.words(), &[0b1101]);
        assert!(PackedSigns::from_values(1, 2, &[1.0, f32::NAN]).is_err());
        // Back from its words; a word too few, or a padding bit set, is refused.
        assert_eq!(PackedSigns::from_words(1, 4, vec![0b1101]).unwrap(), p);
        assert!(PackedSigns::from_words(1, 4, vec![0b1_1101]).is_err());
        assert!(PackedSigns::from_words(2, 4, vec![0b1101]).is_err());
        assert!(PackedSigns::from_words(1, 64, vec![u64::MAX]).is_ok());
        assert!(PackedSigns::from_values(2, 2, &[1.0]).is_err());
        let w = PackedSigns::from_values(3, 4, &[1.0; 12]).unwrap();
        assert!(xnor_gemm(BinaryKernel::Portable, &p, &w, &mut [0; 2]).is_err());
        let short = PackedSigns::from_values(3, 5, &[1.0; 15]).unwrap();
        assert!(xnor_gemm(BinaryKernel::Portable, &p, &short, &mut [0; 3]).is_err());
    }

    /// A binary convolution by the definition: the padded image's signs (padding +1) times the
    /// filters' signs, summed over each window, scaled.
    #[allow(clippy::too_many_arguments)]
    fn conv_reference(
        x: &[f32],
        batch: usize,
        shape: &ConvShape,
        w: &[f32],
        outputs: usize,
        alpha: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let sign = |v: f32| if v >= 0.0 { 1 } else { -1 };
        let [oh, ow] = shape.output().unwrap();
        let (c, h, wd) = (shape.channels, shape.height, shape.width);
        let [kh, kw] = shape.kernel;
        let [(top, _), (left, _)] = shape.padding;
        let mut out = vec![];
        for b in 0..batch {
            let image = &x[b * c * h * wd..(b + 1) * c * h * wd];
            let beta = image.iter().map(|v| v.abs()).sum::<f32>() / image.len() as f32;
            for o in 0..outputs {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut dot = 0;
                        for ch in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let r = (y * shape.stride[0] + i * shape.dilation[0]) as isize
                                        - top as isize;
                                    let col = (xo * shape.stride[1] + j * shape.dilation[1])
                                        as isize
                                        - left as isize;
                                    let inside = r >= 0
                                        && col >= 0
                                        && (r as usize) < h
                                        && (col as usize) < wd;
                                    let v = if inside {
                                        image[ch * h * wd + r as usize * wd + col as usize]
                                    } else {
                                        0.0
                                    };
                                    dot += sign(v)
                                        * sign(w[o * c * kh * kw + ch * kh * kw + i * kw + j]);
                                }
                            }
                        }
                        out.push(beta * alpha[o] * dot as f32 + bias[o]);
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every kernel gives the definition's outputs exactly (the same f32 operations on the
        /// same integer dot products), for strides, dilations and paddings of either side.
        #[test]
        fn binary_convolution_matches_the_definition(
            batch in 1usize..3, channels in 1usize..5, outputs in 1usize..5,
            size in 3usize..9, k in 1usize..4, stride in 1usize..3, dilation in 1usize..3,
            pad in 0usize..3, seed in any::<u32>(),
        ) {
            let shape = ConvShape {
                channels,
                height: size,
                width: size + 1,
                kernel: [k, k],
                stride: [stride, stride],
                dilation: [dilation, dilation],
                padding: [(pad, pad / 2), (pad / 2, pad)],
            };
            prop_assume!(shape.output().is_ok());
            let x = values(batch * channels * size * (size + 1), seed);
            let depth = shape.depth();
            let w = values(outputs * depth, seed ^ 0x3333);
            let alpha: Vec<f32> = (0..outputs).map(|o| 0.25 + o as f32).collect();
            let bias: Vec<f32> = (0..outputs).map(|o| o as f32 - 1.5).collect();
            let want = conv_reference(&x, batch, &shape, &w, outputs, &alpha, &bias);
            let packed = PackedSigns::from_values(outputs, depth, &w).unwrap();
            for kernel in BinaryKernel::available() {
                let got = binary_conv2d(kernel, &x, batch, &shape, &packed, &alpha, Some(&bias)).unwrap();
                prop_assert_eq!(&got, &want, "{}", kernel.name());
            }
        }
    }

    #[test]
    fn binary_convolution_refuses_bad_inputs() {
        let shape = ConvShape {
            channels: 1,
            height: 3,
            width: 3,
            kernel: [2, 2],
            stride: [1, 1],
            dilation: [1, 1],
            padding: [(0, 0), (0, 0)],
        };
        let w = PackedSigns::from_values(2, 4, &[1.0; 8]).unwrap();
        let k = BinaryKernel::Portable;
        let mut x = vec![1.0f32; 9];
        assert!(binary_conv2d(k, &x, 1, &shape, &w, &[1.0, 1.0], None).is_ok());
        assert!(binary_conv2d(k, &x, 2, &shape, &w, &[1.0, 1.0], None).is_err());
        assert!(binary_conv2d(k, &x, 1, &shape, &w, &[1.0], None).is_err());
        let deep = PackedSigns::from_values(2, 5, &[1.0; 10]).unwrap();
        assert!(binary_conv2d(k, &x, 1, &shape, &deep, &[1.0, 1.0], None).is_err());
        x[4] = f32::NAN;
        assert!(binary_conv2d(k, &x, 1, &shape, &w, &[1.0, 1.0], None).is_err());
        let wide = ConvShape {
            kernel: [4, 4],
            ..shape
        };
        assert!(binary_conv2d(k, &[1.0; 9], 1, &wide, &w, &[1.0, 1.0], None).is_err());
    }

    #[test]
    fn binary_linear_scales_as_xnor_net_does() {
        // x = [2, -2, 2, 2]: mean |x| = 2, signs (+ - + +). w rows: (+ + + +) and (- + - -).
        let w =
            PackedSigns::from_values(2, 4, &[1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0]).unwrap();
        let out = binary_linear(
            BinaryKernel::detect(),
            &[2.0, -2.0, 2.0, 2.0],
            1,
            &w,
            &[0.5, 0.25],
            Some(&[1.0, 0.0]),
        )
        .unwrap();
        // dots: 1 - 1 + 1 + 1 = 2 and -1 - 1 - 1 - 1 = -4.
        assert_eq!(out, vec![2.0 * 0.5 * 2.0 + 1.0, 2.0 * 0.25 * -4.0]);
    }
}
