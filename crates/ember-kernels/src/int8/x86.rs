//! The x86-64 kernels. Each safe entry point takes the [`CpuChecked`] token that only
//! [`super::Int8Kernel`]'s constructors make after detecting the features its `unsafe` body is
//! compiled for, and checks every slice length before the body reads through raw pointers.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{
    BLOCK_COLS, CpuChecked, Finish, FinishArgs, GROUP, PackedWeights, finite_range_body,
    quantize_body,
};

/// Rows per tile of the VNNI kernel: 6 rows x 4 blocks keep 24 accumulators, 4 weight vectors
/// and one broadcast in the 32 zmm registers.
const VNNI_ROWS: usize = 6;
const VNNI_BLOCKS: usize = 4;
/// Rows per tile of the AVX2 kernel: 6 rows x 2 quads of columns keep 12 accumulators, 2 weight
/// vectors and one broadcast in the 16 ymm registers.
const AVX2_ROWS: usize = 6;
const AVX2_QUADS: usize = 2;

/// Calls `$kernel::<MR, N>` for run-time `mr` (1..=6) and `n` (1..=4).
macro_rules! dispatch {
    ($kernel:ident, $mr:expr, $n:expr, $tile:expr) => {
        match ($mr, $n) {
            (1, 1) => $kernel::<1, 1>($tile),
            (1, 2) => $kernel::<1, 2>($tile),
            (1, 3) => $kernel::<1, 3>($tile),
            (1, _) => $kernel::<1, 4>($tile),
            (2, 1) => $kernel::<2, 1>($tile),
            (2, 2) => $kernel::<2, 2>($tile),
            (2, 3) => $kernel::<2, 3>($tile),
            (2, _) => $kernel::<2, 4>($tile),
            (3, 1) => $kernel::<3, 1>($tile),
            (3, 2) => $kernel::<3, 2>($tile),
            (3, 3) => $kernel::<3, 3>($tile),
            (3, _) => $kernel::<3, 4>($tile),
            (4, 1) => $kernel::<4, 1>($tile),
            (4, 2) => $kernel::<4, 2>($tile),
            (4, 3) => $kernel::<4, 3>($tile),
            (4, _) => $kernel::<4, 4>($tile),
            (5, 1) => $kernel::<5, 1>($tile),
            (5, 2) => $kernel::<5, 2>($tile),
            (5, 3) => $kernel::<5, 3>($tile),
            (5, _) => $kernel::<5, 4>($tile),
            (_, 1) => $kernel::<6, 1>($tile),
            (_, 2) => $kernel::<6, 2>($tile),
            (_, 3) => $kernel::<6, 3>($tile),
            (_, _) => $kernel::<6, 4>($tile),
        }
    };
}

/// What a tile kernel reads and writes, checked once by the safe entry points.
struct Tile {
    a: *const u8,
    /// Elements (not bytes) between rows of `a`.
    a_stride: usize,
    w: *const i8,
    /// Bytes between the packed panels of neighbouring blocks.
    block_stride: usize,
    groups: usize,
    out: *mut i32,
    out_stride: usize,
}

fn check(a_len: usize, m: usize, k_padded: usize, w_len: usize, tile_len: usize, width: usize) {
    // Violations are bugs of the driver in mod.rs, never of user input, which it has checked.
    assert!(a_len >= m * k_padded, "activation rows too short");
    assert!(tile_len >= m * width, "tile too short");
    assert!(
        w_len.is_multiple_of((k_padded * BLOCK_COLS).max(1)),
        "bad panel"
    );
}

/// Raw sums of the column blocks `blocks` of `packed` for `m` rows of `a`, into `tile`
/// (row-major, `blocks.len() · 16` wide, block `blocks.start` at column 0).
pub(super) fn vnni(
    _: CpuChecked,
    a: &[u8],
    m: usize,
    packed: &PackedWeights,
    blocks: std::ops::Range<usize>,
    tile: &mut [i32],
) {
    let (k_padded, w, width) = (packed.k_padded, &packed.data, blocks.len() * BLOCK_COLS);
    check(a.len(), m, k_padded, w.len(), tile.len(), width);
    let block_stride = k_padded * BLOCK_COLS;
    assert!(w.len() >= blocks.end * block_stride, "panel too short");
    assert!(width >= blocks.len() * BLOCK_COLS, "tile too narrow");
    for b0 in blocks.clone().step_by(VNNI_BLOCKS) {
        let nb = (blocks.end - b0).min(VNNI_BLOCKS);
        for r0 in (0..m).step_by(VNNI_ROWS) {
            let mr = (m - r0).min(VNNI_ROWS);
            let t = Tile {
                // SAFETY (all three): in bounds by the checks above (row r0 < m, block b0 <
                // blocks.end, column (b0 - start) · 16 < width).
                a: unsafe { a.as_ptr().add(r0 * k_padded) },
                a_stride: k_padded,
                w: unsafe { w.as_ptr().add(b0 * block_stride) },
                block_stride,
                groups: k_padded / GROUP,
                out: unsafe {
                    tile.as_mut_ptr()
                        .add(r0 * width + (b0 - blocks.start) * BLOCK_COLS)
                },
                out_stride: width,
            };
            // SAFETY: the token proves AVX-512 F, BW and VNNI; the tile's `mr` rows and `nb`
            // blocks lie inside the checked slices.
            unsafe { dispatch!(vnni_tile, mr, nb, &t) };
        }
    }
}

/// The same for the AVX2 kernel, whose activations are widened to `i16`.
pub(super) fn avx2(
    _: CpuChecked,
    a: &[i16],
    m: usize,
    packed: &PackedWeights,
    blocks: std::ops::Range<usize>,
    tile: &mut [i32],
) {
    let (k_padded, w, width) = (packed.k_padded, &packed.data, blocks.len() * BLOCK_COLS);
    check(a.len(), m, k_padded, w.len(), tile.len(), width);
    let block_stride = k_padded * BLOCK_COLS;
    assert!(w.len() >= blocks.end * block_stride, "panel too short");
    assert!(width >= blocks.len() * BLOCK_COLS, "tile too narrow");
    let quads_per_block = BLOCK_COLS / 4;
    for block in blocks.clone() {
        for q0 in (0..quads_per_block).step_by(AVX2_QUADS) {
            for r0 in (0..m).step_by(AVX2_ROWS) {
                let mr = (m - r0).min(AVX2_ROWS);
                let t = Tile {
                    // SAFETY (all three): in bounds by the checks above; `a` counts i16
                    // elements, cast back in the kernel.
                    a: unsafe { a.as_ptr().add(r0 * k_padded) }.cast(),
                    a_stride: k_padded,
                    w: unsafe { w.as_ptr().add(block * block_stride + q0 * 4 * GROUP) },
                    block_stride,
                    groups: k_padded / GROUP,
                    out: unsafe {
                        tile.as_mut_ptr()
                            .add(r0 * width + (block - blocks.start) * BLOCK_COLS + q0 * 4)
                    },
                    out_stride: width,
                };
                // SAFETY: the token proves AVX2; rows and quads lie inside the checked slices.
                unsafe { dispatch!(avx2_tile, mr, AVX2_QUADS, &t) };
            }
        }
    }
}

/// `MR` rows x `NB` blocks of 16 columns: per group of 4 inputs, one broadcast of 4 activation
/// bytes per row and one 64-byte weight load per block feed `MR · NB` `vpdpbusd`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_tile<const MR: usize, const NB: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_si512(); NB]; MR];
    for g in 0..t.groups {
        let mut w = [_mm512_setzero_si512(); NB];
        for (b, w) in w.iter_mut().enumerate() {
            // SAFETY: block b's group g is inside the panel (checked by the caller).
            *w = unsafe { _mm512_loadu_si512(t.w.add(b * t.block_stride + g * 64).cast()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r's group g is inside the activations.
            let a4 = unsafe {
                t.a.add(r * t.a_stride + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned()
            };
            let a = _mm512_set1_epi32(a4);
            for (acc, &w) in acc.iter_mut().zip(&w) {
                *acc = _mm512_dpbusd_epi32(*acc, a, w);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (b, &acc) in acc.iter().enumerate() {
            // SAFETY: the tile's rows and columns are inside `out` (checked by the caller).
            unsafe { _mm512_storeu_si512(t.out.add(r * t.out_stride + b * 16).cast(), acc) };
        }
    }
}

/// `MR` rows x `NQ` quads of 4 columns. Per group of 4 inputs, the row's 4 activations (as
/// `i16`) are broadcast to every quad, each quad's 16 weights are sign-extended to `i16`, and
/// `vpmaddwd` adds each pair of products into an `i32` lane: `[c0: a0w0 + a1w1, c0: a2w2 +
/// a3w3, c1: ..., c3: ...]`, whose neighbours are added at the end.
#[target_feature(enable = "avx2")]
unsafe fn avx2_tile<const MR: usize, const NQ: usize>(t: &Tile) {
    let a = t.a.cast::<i16>();
    let mut acc = [[_mm256_setzero_si256(); NQ]; MR];
    for g in 0..t.groups {
        let mut w = [_mm256_setzero_si256(); NQ];
        for (q, w) in w.iter_mut().enumerate() {
            // SAFETY: quad q of group g is inside the block's panel.
            let bytes = unsafe { _mm_loadu_si128(t.w.add(g * 64 + q * 16).cast()) };
            *w = _mm256_cvtepi8_epi16(bytes);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r's group g (4 i16) is inside the activations.
            let a4 = unsafe {
                a.add(r * t.a_stride + g * GROUP)
                    .cast::<i64>()
                    .read_unaligned()
            };
            let a = _mm256_set1_epi64x(a4);
            for (acc, &w) in acc.iter_mut().zip(&w) {
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(a, w));
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (q, &acc) in acc.iter().enumerate() {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` holds 8 i32.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
            for c in 0..4 {
                // SAFETY: the quad's 4 columns are inside `out` (checked by the caller).
                unsafe {
                    *t.out.add(r * t.out_stride + q * 4 + c) = lanes[2 * c] + lanes[2 * c + 1]
                };
            }
        }
    }
}

/// Independent accumulators of the peak loops: more than the instructions' latency times
/// their throughput, so the loop runs at throughput.
const PEAK_CHAINS: usize = 12;

/// `iterations` rounds of `vpdpbusd` on 12 independent accumulators: the instruction the VNNI
/// kernel spends its time in, at its best rate. Returns a sum that depends on every result.
pub(super) fn vnni_peak(_: CpuChecked, iterations: usize) -> i64 {
    // SAFETY: the token proves AVX-512 F, BW and VNNI.
    unsafe { vnni_peak_body(iterations) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn vnni_peak_body(iterations: usize) -> i64 {
    let a = _mm512_set1_epi32(0x0102_0304);
    let w = _mm512_set1_epi32(0x0101_0101);
    let mut acc = [_mm512_setzero_si512(); PEAK_CHAINS];
    for _ in 0..iterations {
        for acc in &mut acc {
            *acc = _mm512_dpbusd_epi32(*acc, a, w);
        }
        // Keeps the compiler from folding the loop: `a` is opaque from here on.
        std::hint::black_box(&a);
    }
    acc.iter()
        .map(|&v| i64::from(_mm512_reduce_add_epi32(v)))
        .sum()
}

/// The same for the AVX2 kernel's inner sequence, `vpmaddwd` then `vpaddd`.
pub(super) fn avx2_peak(_: CpuChecked, iterations: usize) -> i64 {
    // SAFETY: the token proves AVX2.
    unsafe { avx2_peak_body(iterations) }
}

#[target_feature(enable = "avx2")]
fn avx2_peak_body(iterations: usize) -> i64 {
    // Each chain multiplies its own weight by an activation that changes on every round (as
    // the kernel's broadcasts do): with one loop-invariant product the compiler computed it
    // once and the loop timed 12 additions, a "peak" 2.2x the instruction's rate.
    let w: [__m256i; PEAK_CHAINS] = std::array::from_fn(|i| _mm256_set1_epi32(i as i32 + 1));
    let (mut a, step) = (_mm256_set1_epi32(0x0002_0003), _mm256_set1_epi16(1));
    let mut acc = [_mm256_setzero_si256(); PEAK_CHAINS];
    for _ in 0..iterations {
        a = _mm256_add_epi16(a, step);
        for (acc, &w) in acc.iter_mut().zip(&w) {
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(a, w));
        }
    }
    let mut total = 0i64;
    for v in acc {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds 8 i32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
        total += lanes.iter().map(|&l| i64::from(l)).sum::<i64>();
    }
    total
}

/// [`super::quantize_u8`] with AVX-512: `vcvtps2dq` rounds half to even in the default
/// rounding mode, so 16 values take a division, a clamp, one conversion, the zero point, a
/// clamp and a saturating narrow to bytes.
pub(super) fn quantize_avx512(
    _: CpuChecked,
    x: &[f32],
    scale: f32,
    zero_point: i32,
    bounds: (u8, u8),
    out: &mut [u8],
) {
    // SAFETY: the token proves AVX-512 F and BW.
    unsafe { quantize_avx512_body(x, scale, zero_point, bounds, out) }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_avx512_body(
    x: &[f32],
    scale: f32,
    zero_point: i32,
    (min, max): (u8, u8),
    out: &mut [u8],
) {
    let lo = _mm512_set1_ps((i32::from(min) - zero_point - 1) as f32);
    let hi = _mm512_set1_ps((i32::from(max) - zero_point + 1) as f32);
    let (qmin, qmax) = (_mm512_set1_epi32(min.into()), _mm512_set1_epi32(max.into()));
    let (scale_v, zp) = (_mm512_set1_ps(scale), _mm512_set1_epi32(zero_point));
    let n = x.len().min(out.len());
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= n, inside both slices.
        let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        let v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, scale_v), lo), hi);
        let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
        let q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
        // SAFETY: 16 bytes from i, inside `out`.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), _mm512_cvtusepi32_epi8(q)) };
    }
    quantize_body(
        &x[full..n],
        scale,
        zero_point,
        (min, max),
        &mut out[full..n],
    );
}

/// [`super::quantize_u8`] with AVX2, by the same steps 8 values at a time.
pub(super) fn quantize_avx2(
    _: CpuChecked,
    x: &[f32],
    scale: f32,
    zero_point: i32,
    bounds: (u8, u8),
    out: &mut [u8],
) {
    // SAFETY: the token proves AVX2.
    unsafe { quantize_avx2_body(x, scale, zero_point, bounds, out) }
}

#[target_feature(enable = "avx2")]
fn quantize_avx2_body(
    x: &[f32],
    scale: f32,
    zero_point: i32,
    (min, max): (u8, u8),
    out: &mut [u8],
) {
    let lo = _mm256_set1_ps((i32::from(min) - zero_point - 1) as f32);
    let hi = _mm256_set1_ps((i32::from(max) - zero_point + 1) as f32);
    let (qmin, qmax) = (_mm256_set1_epi32(min.into()), _mm256_set1_epi32(max.into()));
    let (scale_v, zp) = (_mm256_set1_ps(scale), _mm256_set1_epi32(zero_point));
    let n = x.len().min(out.len());
    let full = n / 8 * 8;
    let mut lanes = [0i32; 8];
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= n, inside `x`.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
        let v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, scale_v), lo), hi);
        let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
        let q = _mm256_min_epi32(_mm256_max_epi32(q, qmin), qmax);
        // SAFETY: `lanes` holds 8 i32.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), q) };
        for (o, &l) in out[i..i + 8].iter_mut().zip(&lanes) {
            *o = l as u8;
        }
    }
    quantize_body(
        &x[full..n],
        scale,
        zero_point,
        (min, max),
        &mut out[full..n],
    );
}

/// [`super::finite_range`]'s pass compiled for AVX-512.
pub(super) fn finite_range_avx512(_: CpuChecked, x: &[f32]) -> Option<(f32, f32)> {
    #[target_feature(enable = "avx512f,avx512bw")]
    fn body(x: &[f32]) -> Option<(f32, f32)> {
        finite_range_body(x)
    }
    // SAFETY: the token proves AVX-512 F and BW.
    unsafe { body(x) }
}

/// [`super::finite_range`]'s pass compiled for AVX2.
pub(super) fn finite_range_avx2(_: CpuChecked, x: &[f32]) -> Option<(f32, f32)> {
    #[target_feature(enable = "avx2")]
    fn body(x: &[f32]) -> Option<(f32, f32)> {
        finite_range_body(x)
    }
    // SAFETY: the token proves AVX2.
    unsafe { body(x) }
}

/// [`Finish::write_planes`] compiled for AVX-512.
pub(super) fn write_planes_avx512(_: CpuChecked, finish: &Finish<'_>, args: FinishArgs<'_>) {
    #[target_feature(enable = "avx512f,avx512bw")]
    fn body(finish: &Finish<'_>, args: FinishArgs<'_>) {
        finish.write_planes_body(args)
    }
    // SAFETY: the token proves AVX-512 F and BW.
    unsafe { body(finish, args) }
}

/// [`Finish::write_planes`] compiled for AVX2.
pub(super) fn write_planes_avx2(_: CpuChecked, finish: &Finish<'_>, args: FinishArgs<'_>) {
    #[target_feature(enable = "avx2")]
    fn body(finish: &Finish<'_>, args: FinishArgs<'_>) {
        finish.write_planes_body(args)
    }
    // SAFETY: the token proves AVX2.
    unsafe { body(finish, args) }
}

/// [`Finish::write`] compiled for AVX-512.
pub(super) fn write_rows_avx512(_: CpuChecked, finish: &Finish<'_>, args: FinishArgs<'_>) {
    #[target_feature(enable = "avx512f,avx512bw")]
    fn body(finish: &Finish<'_>, args: FinishArgs<'_>) {
        finish.write_body(args)
    }
    // SAFETY: the token proves AVX-512 F and BW.
    unsafe { body(finish, args) }
}

/// [`Finish::write`] compiled for AVX2.
pub(super) fn write_rows_avx2(_: CpuChecked, finish: &Finish<'_>, args: FinishArgs<'_>) {
    #[target_feature(enable = "avx2")]
    fn body(finish: &Finish<'_>, args: FinishArgs<'_>) {
        finish.write_body(args)
    }
    // SAFETY: the token proves AVX2.
    unsafe { body(finish, args) }
}
