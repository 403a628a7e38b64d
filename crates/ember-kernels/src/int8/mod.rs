//! Integer GEMM for quantized layers: `u8` activations times `i8` weights, summed exactly in
//! `i32`, then dequantized to `f32` with the bias and an optional ReLU in the same pass.
//!
//! The weights are packed once ([`PackedWeights`]) when a model is converted: blocks of 16
//! output columns, each holding 4 consecutive input elements of every column together, the
//! order AVX-512 VNNI's `vpdpbusd` consumes (one 64-byte load feeds 16 columns x 4 products).
//! Their column sums are kept beside them, so that the activation's zero point folds out of the
//! sum: `Σ (a - za)(w - zw) = Σ a·w - za·Σw - zw·Σa + K·za·zw`.
//!
//! Three kernels compute `Σ a·w`, chosen at run time ([`Int8Kernel::detect`]), every one exact
//! on the full `u8` x `i8` range and tested against the same plain triple loop:
//! - AVX-512 VNNI: `vpdpbusd` adds four `u8·i8` products into an `i32` lane with no narrower
//!   intermediate;
//! - AVX2: `vpmaddubsw` would add two products in a saturating `i16` (255·127·2 > 32767, the
//!   silent error fbgemm avoids with 7-bit activations), so this kernel widens both sides to
//!   `i16` and uses `vpmaddwd`, whose pair sums land in `i32`: exact for any input, so the
//!   quantization scheme need not depend on the CPU;
//! - portable: scalar code over the same packed layout, the reference the others are forced
//!   against in the tests.

mod conv;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use rayon::prelude::*;

use crate::{KernelError, Result, check_len};

pub use conv::{ConvShape, conv2d, reference_conv_sums};

/// Output columns per packed block (one 512-bit vector of `i32`).
pub const BLOCK_COLS: usize = 16;
/// Input elements per packed group (one `vpdpbusd` lane).
pub const GROUP: usize = 4;
/// The deepest product whose exact result fits `i32` at full range, zero points included:
/// `K · 255 · 255 < 2^31` (33 025; BERT-large's widest layer is 4096 deep).
pub const MAX_DEPTH: usize = (i32::MAX as usize) / (255 * 255);
/// Multiply-adds from which one row's columns are split across rayon's threads (a large
/// layer at batch 1 is bound by reading its weights, which two cores do faster than one), and
/// from which a convolution's images are.
const PARALLEL_MIN_MACS: usize = 1 << 22;
/// Multiply-adds from which a batch's rows are split, for the VNNI kernel: below it
/// (LeNet-300-100's first layer at batch 256, 60 M), waking rayon's sleeping thread costs more
/// than the second core saves on the 2-core machines (`cargo xtask bench kernels`,
/// `models_t2`; a call after 0.5 ms idle took 235 µs on 2 threads against 160 µs on one, in a
/// development run). Slower kernels split from proportionally fewer ([`parallel_min_row_macs`]).
const PARALLEL_MIN_ROW_MACS: usize = 1 << 26;

/// [`PARALLEL_MIN_ROW_MACS`] for `kernel`: about the same time spent in the product, the
/// AVX2 kernel doing about a third of VNNI's work per cycle and the portable one far less.
fn parallel_min_row_macs(kernel: Int8Kernel) -> usize {
    match kernel {
        Int8Kernel::Avx512Vnni(_) => PARALLEL_MIN_ROW_MACS,
        Int8Kernel::Avx2(_) => PARALLEL_MIN_ROW_MACS / 4,
        Int8Kernel::Portable => PARALLEL_MIN_ROW_MACS / 64,
    }
}
/// Column blocks summed into one tile before the epilogue: 64 columns, the VNNI tile's width.
const SPAN_BLOCKS: usize = 4;
/// Rows multiplied by every column before the next rows start: a multiple of the kernels'
/// 6-row tile, and few enough that the band's rows (widened for the AVX2 kernel) and its sums
/// of 64 columns (96 · 64 · 4 bytes) stay in L2 while the weights stream past. Without bands,
/// 4096 rows of a transformer's batch left cache between two column spans.
const BAND_ROWS: usize = 96;
/// Rows of the kernels' tiles: a thread's share of a batch is a multiple of it.
const ROW_TILE: usize = 6;

/// Which integer kernel runs. The SIMD variants hold a token that only their constructors make,
/// after checking the CPU: a kernel the CPU lacks cannot be built, so it is never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Scalar code, on any CPU.
    Portable,
    /// 256-bit vectors, `vpmaddwd` on widened inputs (x86-64 with AVX2).
    Avx2(CpuChecked),
    /// 512-bit vectors, `vpdpbusd` (x86-64 with AVX-512 F, BW and VNNI).
    Avx512Vnni(CpuChecked),
}

pub use crate::simd::CpuChecked;

impl Int8Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::avx512_vnni()
            .or_else(Self::avx2)
            .unwrap_or(Self::Portable)
    }

    /// The AVX2 kernel, if the CPU has AVX2.
    pub fn avx2() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(Self::Avx2(CpuChecked(())));
        }
        None
    }

    /// The AVX-512 VNNI kernel, if the CPU has AVX-512 F, BW and VNNI.
    pub fn avx512_vnni() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Some(Self::Avx512Vnni(CpuChecked(())));
        }
        None
    }

    /// Every kernel this CPU runs, portable first.
    pub fn available() -> Vec<Self> {
        std::iter::once(Self::Portable)
            .chain(Self::avx2())
            .chain(Self::avx512_vnni())
            .collect()
    }

    /// Its name in reports: `portable`, `avx2`, `avx512_vnni`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2(_) => "avx2",
            Self::Avx512Vnni(_) => "avx512_vnni",
        }
    }
}

/// How a weight matrix is laid out in the slice handed to [`PackedWeights::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Row-major `[k, n]`: burn's `Linear` weight `[d_input, d_output]`.
    InputMajor,
    /// Row-major `[n, k]`: a convolution's `[out, in · kh · kw]`, PyTorch's `Linear`.
    OutputMajor,
}

/// An `i8` weight matrix `[k, n]` packed for the kernels, with its per-column scales and zero
/// points (one of each for the whole matrix, or one per output column) and column sums.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of [`GROUP`].
    k_padded: usize,
    /// `[n / 16 blocks][k_padded / 4 groups][16 columns][4 elements]`, zero-padded.
    data: Vec<i8>,
    col_sums: Vec<i32>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl PackedWeights {
    /// Pack `values` (`k · n` integers in `layout`), dequantized as `(w - zero_point) · scale`
    /// with one scale and zero point per output column, or one of each for all of them.
    pub fn new(
        values: &[i8],
        k: usize,
        n: usize,
        layout: WeightLayout,
        scales: &[f32],
        zero_points: &[i32],
    ) -> Result<Self> {
        let numel = k.checked_mul(n).ok_or(KernelError::TooLarge(k))?;
        check_len("weights", numel, values.len())?;
        if k > MAX_DEPTH {
            return Err(KernelError::TooLarge(k));
        }
        let per_column = |what: &'static str, len: usize| {
            if len == 1 || len == n {
                Ok(())
            } else {
                Err(KernelError::Length {
                    what,
                    expected: n,
                    actual: len,
                })
            }
        };
        per_column("weight scales", scales.len())?;
        per_column("weight zero points", zero_points.len())?;
        if let Some(&bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(KernelError::Parameter {
                what: "weight scale",
                value: bad.to_string(),
            });
        }
        if let Some(&bad) = zero_points.iter().find(|z| !(-128..=127).contains(*z)) {
            return Err(KernelError::Parameter {
                what: "weight zero point",
                value: bad.to_string(),
            });
        }
        let at = |kk: usize, nn: usize| match layout {
            WeightLayout::InputMajor => values[kk * n + nn],
            WeightLayout::OutputMajor => values[nn * k + kk],
        };
        let k_padded = k.next_multiple_of(GROUP);
        let blocks = n.div_ceil(BLOCK_COLS);
        let mut data = vec![0i8; blocks * k_padded * BLOCK_COLS];
        let mut col_sums = vec![0i32; n];
        for (nn, sum) in col_sums.iter_mut().enumerate() {
            let (block, col) = (nn / BLOCK_COLS, nn % BLOCK_COLS);
            for kk in 0..k {
                let w = at(kk, nn);
                *sum += i32::from(w);
                let (group, lane) = (kk / GROUP, kk % GROUP);
                data[((block * (k_padded / GROUP) + group) * BLOCK_COLS + col) * GROUP + lane] = w;
            }
        }
        let expand = |v: &[f32]| {
            if v.len() == n {
                v.to_vec()
            } else {
                vec![v[0]; n]
            }
        };
        let zero_points = if zero_points.len() == n {
            zero_points.to_vec()
        } else {
            vec![zero_points[0]; n]
        };
        Ok(Self {
            k,
            n,
            k_padded,
            data,
            col_sums,
            scales: expand(scales),
            zero_points,
        })
    }

    /// The depth `k` (input elements per output).
    pub fn depth(&self) -> usize {
        self.k
    }

    /// The width `n` (outputs).
    pub fn width(&self) -> usize {
        self.n
    }

    /// The depth rounded up to the kernels' group of 4: a row stride at which activations are
    /// read in place.
    pub fn padded_depth(&self) -> usize {
        self.k_padded
    }

    /// Bytes held: the packed integers and the per-column numbers.
    pub fn bytes(&self) -> usize {
        self.data.len() + 12 * self.n
    }

    /// Whether any column has a zero point: only then do the kernels need the activations'
    /// row sums.
    fn has_zero_points(&self) -> bool {
        self.zero_points.iter().any(|&z| z != 0)
    }

    fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK_COLS)
    }

    /// The packed panel of `block`: `[k_padded / 4][16][4]`.
    fn block(&self, block: usize) -> &[i8] {
        let len = self.k_padded * BLOCK_COLS;
        &self.data[block * len..(block + 1) * len]
    }
}

/// `u8` activations `[m, k]` (row-major) with their per-tensor scale and zero point.
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    /// The integers: row `r` is `values[r * stride..][..k]`.
    pub values: &'a [u8],
    /// Rows (batch x positions).
    pub rows: usize,
    /// Elements from one row to the next: `k`, or [`PackedWeights::padded_depth`] with the
    /// padding zero, which the kernels then read in place instead of copying.
    pub stride: usize,
    /// Step between integers.
    pub scale: f32,
    /// The integer that stands for 0.0.
    pub zero_point: i32,
}

/// What happens to each output after dequantization.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added per output column.
    pub bias: Option<&'a [f32]>,
    /// Clamp at zero.
    pub relu: bool,
}

/// Quantize finite `x` to `u8` as `clamp(round_half_even(x / scale) + zero_point, min, max)`:
/// the same arithmetic as the scalar quantizer that fake quantization uses, so both see the
/// same integers. A scheme of fewer bits or a signed one (shifted by 128) narrows
/// `min..=max`. `out` is cleared and refilled. NaN, which the caller has excluded (see
/// [`finite_range`]), would land on `min`.
pub fn quantize_u8(
    x: &[f32],
    scale: f32,
    zero_point: i32,
    (min, max): (u8, u8),
    out: &mut Vec<u8>,
) {
    // `round_ties_even` is a library call on a baseline x86-64 build (no SSE4.1), and the
    // scalar loop around it cost more than the matrix product. Adding and subtracting
    // 1.5 · 2^23 rounds half to even in the default rounding mode for |v| < 2^22; clamping
    // first keeps v there without changing the result (anything below min - zp - 1 ends at
    // min either way), and the loop vectorizes.
    quantize_u8_with(Int8Kernel::detect(), x, scale, zero_point, (min, max), out);
}

/// [`quantize_u8`] with the vector instructions of `kernel` (each gives the same bytes).
pub fn quantize_u8_with(
    kernel: Int8Kernel,
    x: &[f32],
    scale: f32,
    zero_point: i32,
    (min, max): (u8, u8),
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(x.len(), 0);
    let quantize = |x: &[f32], out: &mut [u8]| match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni(cpu) => {
            x86::quantize_avx512(cpu, x, scale, zero_point, (min, max), out)
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2(cpu) => x86::quantize_avx2(cpu, x, scale, zero_point, (min, max), out),
        _ => quantize_body(x, scale, zero_point, (min, max), out),
    };
    if x.len() < PARALLEL_ELEMENTS {
        quantize(x, out);
    } else {
        // Each value on its own: the split does not change a single integer.
        x.par_chunks(ELEMENT_CHUNK)
            .zip(out.par_chunks_mut(ELEMENT_CHUNK))
            .for_each(|(x, out)| quantize(x, out));
    }
}

/// Values from which the passes over a layer's input (its range, its quantization) split
/// across rayon's threads: a transformer's batch (4096 x 1536 values) took one core for
/// them while the other waited.
const PARALLEL_ELEMENTS: usize = 1 << 18;
/// Values per parallel piece of those passes.
const ELEMENT_CHUNK: usize = 1 << 16;

#[inline(always)]
fn quantize_body(x: &[f32], scale: f32, zero_point: i32, (min, max): (u8, u8), out: &mut [u8]) {
    const MAGIC: f32 = 12_582_912.0;
    let lo = (i32::from(min) - zero_point - 1) as f32;
    let hi = (i32::from(max) - zero_point + 1) as f32;
    let (min, max) = (i32::from(min), i32::from(max));
    for (q, &v) in out.iter_mut().zip(x) {
        let v = (v / scale).max(lo).min(hi);
        let rounded = (v + MAGIC) - MAGIC;
        *q = (rounded as i32 + zero_point).clamp(min, max) as u8;
    }
}

/// The minimum and maximum of `x`, or `None` if it is empty or holds NaN or an infinity: one
/// pass in 16 lanes, which the compiler vectorizes.
pub fn finite_range(x: &[f32]) -> Option<(f32, f32)> {
    let kernel = Int8Kernel::detect();
    let range = |x: &[f32]| match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni(cpu) => x86::finite_range_avx512(cpu, x),
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2(cpu) => x86::finite_range_avx2(cpu, x),
        _ => finite_range_body(x),
    };
    if x.len() < PARALLEL_ELEMENTS {
        return range(x);
    }
    // The minimum and maximum of the pieces' are the whole's, in any order.
    x.par_chunks(ELEMENT_CHUNK).map(range).reduce(
        || Some((f32::INFINITY, f32::NEG_INFINITY)),
        |a, b| Some((a?.0.min(b?.0), a?.1.max(b?.1))),
    )
}

#[inline(always)]
fn finite_range_body(x: &[f32]) -> Option<(f32, f32)> {
    const LANES: usize = 16;
    /// The bits of +inf: a value whose bits without the sign reach them is NaN or infinite.
    const INFINITE: u32 = 0x7f80_0000;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    // The largest magnitude's bits, kept as integers: one `max` per lane per value, where a
    // flag per lane (`bad |= !v.is_finite()`) compiled to a mask-register chain that made
    // this pass latency-bound, as slow as the matrix product after it.
    let mut magnitude = [0u32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let v = chunk[i];
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
            magnitude[i] = magnitude[i].max(v.to_bits() & 0x7fff_ffff);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
        magnitude[i] = magnitude[i].max(v.to_bits() & 0x7fff_ffff);
    }
    if x.is_empty() || magnitude.iter().any(|&m| m >= INFINITE) {
        return None;
    }
    Some((
        lo.iter().copied().fold(f32::INFINITY, f32::min),
        hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    ))
}

/// `out = dequantize(a · w) + bias` (then ReLU), `out` row-major `[rows, n]`: the whole
/// quantized linear layer after its input is quantized.
pub fn linear(
    kernel: Int8Kernel,
    a: Activations<'_>,
    w: &PackedWeights,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) -> Result<()> {
    let (m, k, n) = (a.rows, w.k, w.n);
    if a.stride != k && a.stride != w.k_padded {
        return Err(KernelError::Length {
            what: "activation row stride",
            expected: k,
            actual: a.stride,
        });
    }
    check_len("activations", m * a.stride, a.values.len())?;
    check_len("output", m * n, out.len())?;
    if let Some(bias) = epilogue.bias {
        check_len("bias", n, bias.len())?;
    }
    check_activation(a.scale, a.zero_point)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Row sums are needed only for weights with a zero point (Ember's are symmetric).
    let row_sums: Vec<i32> = if w.has_zero_points() {
        (0..m)
            .map(|r| {
                let row = &a.values[r * a.stride..][..k];
                row.iter().map(|&v| i32::from(v)).sum()
            })
            .collect()
    } else {
        vec![0; m]
    };
    let finish = Finish::new(w, a.scale, a.zero_point, epilogue);
    let blocks = w.blocks();
    // A band of rows at a time, and each span of column blocks of it summed into a small
    // tile and finished into the output right away: the raw sums never make a matrix of their
    // own (a fresh `m x n` buffer per call costs page faults comparable to the product itself).
    let spans = |rows: std::ops::Range<usize>,
                 range: std::ops::Range<usize>,
                 out: &mut [f32],
                 base: usize,
                 width: usize| {
        let mut scratch = RowScratch::default();
        let mut tile = vec![0i32; rows.len().min(BAND_ROWS) * SPAN_BLOCKS * BLOCK_COLS];
        let bands = (rows.start..rows.end).step_by(BAND_ROWS);
        for (r0, out) in bands.zip(out.chunks_mut(BAND_ROWS * width)) {
            let band = r0..r0 + out.len() / width;
            let m = band.len();
            let values = &a.values[r0 * a.stride..];
            let band_rows = pack_rows(kernel, values, m, a.stride, k, w.k_padded, &mut scratch);
            for start in range.clone().step_by(SPAN_BLOCKS) {
                let span = start..(start + SPAN_BLOCKS).min(range.end);
                let tile = &mut tile[..m * span.len() * BLOCK_COLS];
                sums(kernel, band_rows, m, w, span.clone(), tile);
                finish.write(
                    kernel,
                    tile,
                    span,
                    out,
                    width,
                    base,
                    &row_sums[band.clone()],
                );
            }
        }
    };
    let threads = if m * k * n >= PARALLEL_MIN_MACS {
        rayon::current_num_threads()
    } else {
        1
    };
    if threads <= 1 {
        spans(0..m, 0..blocks, out, 0, n);
        return Ok(());
    }
    // Rows, and columns, are independent, and each output is summed in the same order
    // whatever the split: the result does not depend on the thread count. A batch splits by
    // rows (each thread writes its own rows of the output); a single row splits by columns.
    if m >= 2 * ROW_TILE {
        if m * k * n < parallel_min_row_macs(kernel) {
            spans(0..m, 0..blocks, out, 0, n);
            return Ok(());
        }
        let per_thread = m.div_ceil(threads).next_multiple_of(ROW_TILE);
        out.par_chunks_mut(per_thread * n)
            .enumerate()
            .for_each(|(i, part)| {
                let r0 = i * per_thread;
                spans(r0..r0 + part.len() / n, 0..blocks, part, 0, n);
            });
        return Ok(());
    }
    let per_thread = blocks.div_ceil(threads.min(blocks));
    let parts: Vec<(usize, usize, Vec<f32>)> = (0..blocks)
        .step_by(per_thread)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let range = start..(start + per_thread).min(blocks);
            let base = start * BLOCK_COLS;
            let width = (range.end * BLOCK_COLS).min(n) - base;
            let mut part = vec![0.0f32; m * width];
            spans(0..m, range, &mut part, base, width);
            (base, width, part)
        })
        .collect();
    for (base, width, part) in parts {
        for (row, part_row) in out.chunks_mut(n).zip(part.chunks(width)) {
            row[base..base + width].copy_from_slice(part_row);
        }
    }
    Ok(())
}

/// An activation scale and zero point the kernels can use: a positive finite scale, a zero
/// point that is a `u8`.
fn check_activation(scale: f32, zero_point: i32) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(KernelError::Parameter {
            what: "activation scale",
            value: scale.to_string(),
        });
    }
    if !(0..=255).contains(&zero_point) {
        return Err(KernelError::Parameter {
            what: "activation zero point",
            value: zero_point.to_string(),
        });
    }
    Ok(())
}

/// The raw sums `Σ a·w` for `[rows, n]`, zero points not applied: what the kernels compute,
/// exposed for tests and benchmarks.
pub fn gemm_sums(
    kernel: Int8Kernel,
    a: &[u8],
    rows: usize,
    w: &PackedWeights,
    out: &mut [i32],
) -> Result<()> {
    check_len("activations", rows * w.k, a.len())?;
    check_len("output", rows * w.n, out.len())?;
    if rows == 0 || w.n == 0 {
        return Ok(());
    }
    let mut scratch = RowScratch::default();
    let packed = pack_rows(kernel, a, rows, w.k, w.k, w.k_padded, &mut scratch);
    let blocks = w.blocks();
    let mut tile = vec![0i32; rows * blocks * BLOCK_COLS];
    sums(kernel, packed, rows, w, 0..blocks, &mut tile);
    let width = blocks * BLOCK_COLS;
    for (r, row) in out.chunks_mut(w.n).enumerate() {
        row.copy_from_slice(&tile[r * width..r * width + w.n]);
    }
    Ok(())
}

/// Rows of activations as a kernel reads them: `k_padded` apart, the padding zero (which adds
/// nothing to any sum), widened to `i16` for the AVX2 kernel.
#[derive(Clone, Copy)]
enum Rows<'a> {
    U8(&'a [u8]),
    I16(&'a [i16]),
}

/// Where [`pack_rows`] lays out rows the kernel cannot read in place, reused from band to band:
/// each row's padding past `k` is zeroed when a buffer grows and never written after, so a
/// band of the same shape rewrites only the values.
#[derive(Default)]
struct RowScratch {
    u8s: Vec<u8>,
    i16s: Vec<i16>,
}

/// `m` rows of `k` activations, `stride` apart in `a`, as `kernel` reads them: borrowed where
/// the caller laid them out so already, else copied into `scratch`.
fn pack_rows<'a>(
    kernel: Int8Kernel,
    a: &'a [u8],
    m: usize,
    stride: usize,
    k: usize,
    k_padded: usize,
    scratch: &'a mut RowScratch,
) -> Rows<'a> {
    let rows = |r: usize| &a[r * stride..r * stride + k];
    match kernel {
        Int8Kernel::Avx2(_) => {
            let out = &mut scratch.i16s;
            out.resize(m * k_padded, 0);
            for r in 0..m {
                for (d, &s) in out[r * k_padded..].iter_mut().zip(rows(r)) {
                    *d = i16::from(s);
                }
            }
            Rows::I16(out)
        }
        _ if stride == k_padded => Rows::U8(&a[..m * k_padded]),
        _ => {
            let out = &mut scratch.u8s;
            out.resize(m * k_padded, 0);
            for r in 0..m {
                out[r * k_padded..r * k_padded + k].copy_from_slice(rows(r));
            }
            Rows::U8(out)
        }
    }
}

/// Raw sums of the column blocks `blocks` into `tile`, row-major `[m, blocks.len() · 16]`.
fn sums(
    kernel: Int8Kernel,
    a: Rows<'_>,
    m: usize,
    w: &PackedWeights,
    blocks: std::ops::Range<usize>,
    tile: &mut [i32],
) {
    let width = blocks.len() * BLOCK_COLS;
    match (kernel, a) {
        #[cfg(target_arch = "x86_64")]
        (Int8Kernel::Avx512Vnni(cpu), Rows::U8(a)) => x86::vnni(cpu, a, m, w, blocks, tile),
        #[cfg(target_arch = "x86_64")]
        (Int8Kernel::Avx2(cpu), Rows::I16(a)) => x86::avx2(cpu, a, m, w, blocks, tile),
        (_, Rows::U8(a)) => {
            for (i, block) in blocks.enumerate() {
                let col0 = i * BLOCK_COLS;
                portable::block(a, m, w.k_padded, w.block(block), tile, width, col0);
            }
        }
        (_, Rows::I16(a)) => {
            for (i, block) in blocks.enumerate() {
                let col0 = i * BLOCK_COLS;
                portable::block_i16(a, m, w.k_padded, w.block(block), tile, width, col0);
            }
        }
    }
}

/// The epilogue: zero-point corrections, dequantization, bias and ReLU, with everything that
/// depends on the column alone computed once per call.
///
/// The exact sum `Σ (a - za)(w - zw) = Σ a·w - (za·Σw - K·za·zw) - zw·Σa` is computed in
/// wrapping `i32`: its terms can leave `i32`'s range, but the result is within it (|result| <=
/// K · 255 · 255 < 2^31 for K <= [`MAX_DEPTH`]), so arithmetic modulo 2^32 gives it exactly, in
/// a loop the compiler vectorizes.
struct Finish<'a> {
    /// `za · Σw - K · za · zw` per column.
    col_terms: Vec<i32>,
    /// `sa · sw` per column.
    scales: Vec<f32>,
    zero_points: &'a [i32],
    epilogue: Epilogue<'a>,
}

impl<'a> Finish<'a> {
    fn new(w: &'a PackedWeights, a_scale: f32, a_zero: i32, epilogue: Epilogue<'a>) -> Self {
        let k = w.k as i32;
        let col_terms = w
            .col_sums
            .iter()
            .zip(&w.zero_points)
            .map(|(&sum, &zw)| {
                a_zero
                    .wrapping_mul(sum)
                    .wrapping_sub(k.wrapping_mul(a_zero).wrapping_mul(zw))
            })
            .collect();
        Self {
            col_terms,
            scales: w.scales.iter().map(|s| a_scale * s).collect(),
            zero_points: &w.zero_points,
            epilogue,
        }
    }

    /// Finish the sums of column blocks `blocks` (`tile`, `blocks.len() · 16` wide) into `out`,
    /// whose rows are `out_width` wide and hold the columns from `base` on.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        kernel: Int8Kernel,
        tile: &[i32],
        blocks: std::ops::Range<usize>,
        out: &mut [f32],
        out_width: usize,
        base: usize,
        row_sums: &[i32],
    ) {
        let args = (tile, blocks, out, out_width, base, row_sums);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni(cpu) => x86::write_rows_avx512(cpu, self, args),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2(cpu) => x86::write_rows_avx2(cpu, self, args),
            _ => self.write_body(args),
        }
    }

    #[inline(always)]
    fn write_body(&self, (tile, blocks, out, out_width, base, row_sums): FinishArgs<'_>) {
        let width = blocks.len() * BLOCK_COLS;
        let col0 = blocks.start * BLOCK_COLS;
        let cols = col0..(blocks.end * BLOCK_COLS).min(base + out_width);
        let (col_terms, scales) = (&self.col_terms[cols.clone()], &self.scales[cols.clone()]);
        let zero_points = &self.zero_points[cols.clone()];
        let bias = self.epilogue.bias.map(|b| &b[cols.clone()]);
        let relu = self.epilogue.relu;
        for (r, out_row) in out.chunks_mut(out_width).enumerate() {
            let sums = &tile[r * width..][..cols.len()];
            let row_sum = row_sums[r];
            let out_row = &mut out_row[cols.start - base..cols.end - base];
            // Zipped slices, not indices: an indexed loop kept its bounds checks and ran one
            // column at a time (the bias variant was 15 % of an int8 transformer's time).
            let values = sums.iter().zip(col_terms).zip(zero_points).zip(scales).map(
                |(((&sum, &term), &zw), &scale)| {
                    sum.wrapping_sub(term)
                        .wrapping_sub(zw.wrapping_mul(row_sum)) as f32
                        * scale
                },
            );
            // One pass per row, its branches outside the loops so that each loop vectorizes.
            match (bias, relu) {
                (None, false) => out_row.iter_mut().zip(values).for_each(|(o, v)| *o = v),
                (None, true) => out_row
                    .iter_mut()
                    .zip(values)
                    .for_each(|(o, v)| *o = v.max(0.0)),
                (Some(bias), false) => out_row
                    .iter_mut()
                    .zip(values.zip(bias))
                    .for_each(|(o, (v, &b))| *o = v + b),
                (Some(bias), true) => out_row
                    .iter_mut()
                    .zip(values.zip(bias))
                    .for_each(|(o, (v, &b))| *o = (v + b).max(0.0)),
            }
        }
    }
}

/// What [`Finish::write`] and [`Finish::write_planes`] read and write: the tile, its column
/// blocks, the output, two numbers that place the tile in it (the output's row width and
/// first column; the planes' length and the first row's position), and the rows' sums.
type FinishArgs<'a> = (
    &'a [i32],
    std::ops::Range<usize>,
    &'a mut [f32],
    usize,
    usize,
    &'a [i32],
);

/// Rows of one column gathered at a time by [`Finish::write_planes`].
const COLUMN_CHUNK: usize = 64;

impl Finish<'_> {
    /// The same as [`Finish::write`] into planes: `out` is `[n, positions]` (a convolution's
    /// `[out, h · w]`), and the tile's `row_sums.len()` rows are positions `r0..`.
    /// Compiled for the kernel's vector width, where the baseline build has SSE2 only.
    #[allow(clippy::too_many_arguments)]
    fn write_planes(
        &self,
        kernel: Int8Kernel,
        tile: &[i32],
        blocks: std::ops::Range<usize>,
        out: &mut [f32],
        positions: usize,
        r0: usize,
        row_sums: &[i32],
    ) {
        let args = (tile, blocks, out, positions, r0, row_sums);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx512Vnni(cpu) => x86::write_planes_avx512(cpu, self, args),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2(cpu) => x86::write_planes_avx2(cpu, self, args),
            _ => self.write_planes_body(args),
        }
    }

    #[inline(always)]
    fn write_planes_body(&self, (tile, blocks, out, positions, r0, row_sums): FinishArgs<'_>) {
        let width = blocks.len() * BLOCK_COLS;
        let col0 = blocks.start * BLOCK_COLS;
        let cols = col0..(blocks.end * BLOCK_COLS).min(self.col_terms.len());
        let m = row_sums.len();
        // A chunk of rows is transposed whole before any column is finished: the arithmetic
        // then runs on contiguous lanes, which the compiler vectorizes, and the loads come
        // long after the stores (a column read right after it was gathered stalls on store
        // forwarding).
        let mut columns = [0i32; COLUMN_CHUNK * SPAN_BLOCKS * BLOCK_COLS];
        for start in (0..m).step_by(COLUMN_CHUNK) {
            let len = (m - start).min(COLUMN_CHUNK);
            let rows = &tile[start * width..(start + len) * width];
            for (c, column) in columns
                .chunks_exact_mut(COLUMN_CHUNK)
                .take(cols.len())
                .enumerate()
            {
                for (v, row) in column.iter_mut().zip(rows.chunks_exact(width)) {
                    *v = row[c];
                }
            }
            let sums = &row_sums[start..start + len];
            for (i, c) in cols.clone().enumerate() {
                let (term, zw, scale) = (self.col_terms[c], self.zero_points[c], self.scales[c]);
                let bias = self.epilogue.bias.map_or(0.0, |b| b[c]);
                let column = &columns[i * COLUMN_CHUNK..][..len];
                let plane = &mut out[c * positions + r0 + start..][..len];
                for ((o, &sum), &row_sum) in plane.iter_mut().zip(column).zip(sums) {
                    let exact = sum
                        .wrapping_sub(term)
                        .wrapping_sub(zw.wrapping_mul(row_sum));
                    *o = exact as f32 * scale + bias;
                }
                if self.epilogue.relu {
                    for o in plane.iter_mut() {
                        *o = o.max(0.0);
                    }
                }
            }
        }
    }
}

/// A loop of the kernel's inner instruction sequence on independent registers, for the peak
/// rate benchmarks compare the kernel with: `iterations` rounds, returning the integer
/// operations done (a multiply-add counts two, as GEMM figures count them) and a checksum that
/// keeps the loop from being optimized away. `None` for the portable kernel, which has no
/// single instruction to time.
pub fn peak_loop(kernel: Int8Kernel, iterations: usize) -> Option<(u64, i64)> {
    match kernel {
        Int8Kernel::Portable => None,
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni(cpu) => {
            // 12 chains x 16 lanes x 4 products per round.
            let ops = iterations as u64 * 12 * 16 * 4 * 2;
            Some((ops, x86::vnni_peak(cpu, iterations)))
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2(cpu) => {
            // 12 chains x 8 lanes x 2 products per round.
            let ops = iterations as u64 * 12 * 8 * 2 * 2;
            Some((ops, x86::avx2_peak(cpu, iterations)))
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// The plain triple loop every kernel is tested against: `Σ_k a[r, k] · w[k, c]` for `w` in
/// [`WeightLayout::InputMajor`].
pub fn reference_sums(a: &[u8], rows: usize, w: &[i8], k: usize, n: usize) -> Vec<i32> {
    let mut out = vec![0i32; rows * n];
    for r in 0..rows {
        for c in 0..n {
            out[r * n + c] = (0..k)
                .map(|i| i32::from(a[r * k + i]) * i32::from(w[i * n + c]))
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests;
