//! The instruction set a kernel runs with, chosen at run time: a binary built for any x86-64
//! still uses AVX2 and FMA where the CPU has them.

/// Proof that the CPU was checked for a kernel's features. Only this crate makes one, right
/// after the check, so a SIMD variant that holds it (`Isa::Avx2Fma`, the int8 kernels) cannot
/// be built on a CPU that lacks its instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuChecked(pub(crate) ());

/// What the running CPU lets a kernel use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Whatever the build targets (SSE2 on a default x86-64 build); always available.
    Portable,
    /// 256-bit vectors with fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(CpuChecked),
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma(CpuChecked(()));
        }
        Isa::Portable
    }
}

/// Which instruction set the f32 peak loop uses: AVX-512 F where the CPU has it, else AVX2
/// with FMA. Returns the name and the floating-point operations of `iterations` rounds (an
/// FMA counts two) with a checksum, or `None` on a CPU with neither.
pub fn fma_peak(iterations: usize) -> Option<(&'static str, u64, f32)> {
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unsafe_code)]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512 F was just detected.
            let sum = unsafe { x86_peak::avx512(iterations) };
            return Some((
                "avx512f",
                iterations as u64 * x86_peak::CHAINS as u64 * 16 * 2,
                sum,
            ));
        }
        #[allow(unsafe_code)]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were just detected.
            let sum = unsafe { x86_peak::avx2(iterations) };
            return Some((
                "avx2_fma",
                iterations as u64 * x86_peak::CHAINS as u64 * 8 * 2,
                sum,
            ));
        }
    }
    let _ = iterations;
    None
}

#[cfg(target_arch = "x86_64")]
mod x86_peak {
    use std::arch::x86_64::*;

    /// Independent accumulators: more than FMA's latency times its throughput.
    pub const CHAINS: usize = 12;

    #[target_feature(enable = "avx512f")]
    pub fn avx512(iterations: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for acc in &mut acc {
                *acc = _mm512_fmadd_ps(*acc, a, b);
            }
            std::hint::black_box(&a);
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn avx2(iterations: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for acc in &mut acc {
                *acc = _mm256_fmadd_ps(*acc, a, b);
            }
            std::hint::black_box(&a);
        }
        let mut total = 0.0;
        for v in acc {
            let mut lanes = [0.0f32; 8];
            #[allow(unsafe_code)]
            // SAFETY: `lanes` holds 8 f32.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), v)
            };
            total += lanes.iter().sum::<f32>();
        }
        total
    }
}

/// `out += Σ values[k] · b[cols[k]]` over rows of `b` of length `out.len()`: one row of a
/// sparse x dense product.
pub(crate) fn sparse_axpy(isa: Isa, out: &mut [f32], cols: &[u32], values: &[f32], b: &[f32]) {
    match isa {
        Isa::Portable => sparse_axpy_body::<false>(out, cols, values, b),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `Isa::Avx2Fma` holds a `CpuChecked`, which only `detect` makes, after checking
        // that the CPU has AVX2 and FMA, the features the function is compiled for.
        Isa::Avx2Fma(_) => unsafe { sparse_axpy_avx2(out, cols, values, b) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sparse_axpy_avx2(out: &mut [f32], cols: &[u32], values: &[f32], b: &[f32]) {
    // The same body, inlined here so that LLVM vectorizes it 8 wide with FMA.
    sparse_axpy_body::<true>(out, cols, values, b)
}

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, v: f32, x: f32) -> f32 {
    // `mul_add` is one instruction with FMA and a slow library call without it.
    if FMA { v.mul_add(x, acc) } else { acc + v * x }
}

#[inline(always)]
fn sparse_axpy_body<const FMA: bool>(out: &mut [f32], cols: &[u32], values: &[f32], b: &[f32]) {
    let n = out.len();
    let b_row = |c: u32| &b[c as usize * n..(c as usize + 1) * n];
    // Four stored values per pass over the output row: a quarter of the loads and stores of
    // one at a time, which is what bounds this loop.
    let (cols4, values4) = (cols.chunks_exact(4), values.chunks_exact(4));
    let (cols_rest, values_rest) = (cols4.remainder(), values4.remainder());
    for (c, v) in cols4.zip(values4) {
        let rows = b_row(c[0])
            .iter()
            .zip(b_row(c[1]))
            .zip(b_row(c[2]))
            .zip(b_row(c[3]));
        for (o, (((&x0, &x1), &x2), &x3)) in out.iter_mut().zip(rows) {
            let acc = madd::<FMA>(*o, v[0], x0);
            let acc = madd::<FMA>(acc, v[1], x1);
            let acc = madd::<FMA>(acc, v[2], x2);
            *o = madd::<FMA>(acc, v[3], x3);
        }
    }
    for (&c, &v) in cols_rest.iter().zip(values_rest) {
        for (o, &x) in out.iter_mut().zip(b_row(c)) {
            *o = madd::<FMA>(*o, v, x);
        }
    }
}

/// Batch lanes of [`sparse_rows`]: four AVX2 vectors per accumulator. In a one-off timing while
/// this was written (an Intel Xeon with AVX-512, the AVX2 path), LeNet-300-100's first layer at
/// 94 % sparsity and batch 256 took 138 µs with 32 lanes and two accumulators, 175 µs with 16
/// lanes and four.
pub(crate) const LANES: usize = 32;

/// `out[r] = Σ_k values[k] · x[cols[k]]` for every row `r` of a CSR matrix (`row_ptr`,
/// `cols`, `values`), where each `x[c]` holds [`LANES`] samples' value of input `c`: a sparse
/// layer over one block of a batch, every product accumulated in registers.
pub(crate) fn sparse_rows(
    isa: Isa,
    (row_ptr, cols, values): (&[u32], &[u32], &[f32]),
    x: &[[f32; LANES]],
    out: &mut [[f32; LANES]],
) {
    match isa {
        Isa::Portable => sparse_rows_body::<false>(row_ptr, cols, values, x, out),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: as for `sparse_axpy`: the token proves AVX2 and FMA.
        Isa::Avx2Fma(_) => unsafe { sparse_rows_avx2(row_ptr, cols, values, x, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sparse_rows_avx2(
    row_ptr: &[u32],
    cols: &[u32],
    values: &[f32],
    x: &[[f32; LANES]],
    out: &mut [[f32; LANES]],
) {
    sparse_rows_body::<true>(row_ptr, cols, values, x, out)
}

#[inline(always)]
fn sparse_rows_body<const FMA: bool>(
    row_ptr: &[u32],
    cols: &[u32],
    values: &[f32],
    x: &[[f32; LANES]],
    out: &mut [[f32; LANES]],
) {
    for (r, out) in out.iter_mut().enumerate() {
        let range = row_ptr[r] as usize..row_ptr[r + 1] as usize;
        let (cols, values) = (&cols[range.clone()], &values[range]);
        // Two independent accumulators of four vectors each: eight FMAs in flight cover one
        // FMA's latency at two per cycle.
        let mut acc = [[0.0f32; LANES]; 2];
        let (cols2, values2) = (cols.chunks_exact(2), values.chunks_exact(2));
        let (cols_rest, values_rest) = (cols2.remainder(), values2.remainder());
        for (c, v) in cols2.zip(values2) {
            for u in 0..2 {
                let xs = &x[c[u] as usize];
                for l in 0..LANES {
                    acc[u][l] = madd::<FMA>(acc[u][l], v[u], xs[l]);
                }
            }
        }
        for (&c, &v) in cols_rest.iter().zip(values_rest) {
            let xs = &x[c as usize];
            for l in 0..LANES {
                acc[0][l] = madd::<FMA>(acc[0][l], v, xs[l]);
            }
        }
        for l in 0..LANES {
            out[l] = acc[0][l] + acc[1][l];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_isa_agrees_with_the_portable_one() {
        let b: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
        let (cols, values) = ([0u32, 2, 3, 5, 7, 9], [1.5f32, -2.0, 0.5, 3.0, -1.0, 0.25]);
        let mut portable = vec![1.0f32; 4];
        sparse_axpy(Isa::Portable, &mut portable, &cols, &values, &b);
        // By hand for element 0: 1 + 1.5 b[0] - 2 b[8] + 0.5 b[12] + 3 b[20] - b[28] + 0.25 b[36]
        // = 1 - 4.5 + 2 + 0 + 6 - 4 + 1.5 = 2.
        assert_eq!(portable[0], 2.0);
        let mut detected = vec![1.0f32; 4];
        sparse_axpy(Isa::detect(), &mut detected, &cols, &values, &b);
        for (p, d) in portable.iter().zip(&detected) {
            assert!((p - d).abs() <= 1e-5 * (1.0 + p.abs()), "{p} vs {d}");
        }
    }

    #[test]
    fn rows_wider_than_one_vector_take_every_path() {
        // 8-wide vectors: 37 columns run four full vectors and a tail of 5; 7 stored values run
        // one pass of four and a remainder of three.
        let n = 37;
        let b: Vec<f32> = (0..10 * n).map(|i| ((i * 7) % 23) as f32 - 11.0).collect();
        let (cols, values) = (
            [0u32, 1, 3, 4, 6, 8, 9],
            [1.0f32, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0],
        );
        let mut expected = vec![0.5f32; n];
        for (c, v) in cols.iter().zip(values) {
            for (e, x) in expected.iter_mut().zip(&b[*c as usize * n..]) {
                *e += v * x;
            }
        }
        for isa in [Isa::Portable, Isa::detect()] {
            let mut out = vec![0.5f32; n];
            sparse_axpy(isa, &mut out, &cols, &values, &b);
            for (j, (o, e)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (o - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{isa:?} column {j}: {o} vs {e}"
                );
            }
        }
    }

    #[test]
    fn fma_peak_counts_its_work() {
        if let Some((name, flops, sum)) = fma_peak(3) {
            let lanes = if name == "avx512f" { 16 } else { 8 };
            assert_eq!(flops, 3 * 12 * lanes * 2);
            assert!(sum > 0.0);
        }
    }
}
