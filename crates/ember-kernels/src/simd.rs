//! The instruction set a kernel runs with, chosen at run time: a binary built for any x86-64
//! still uses AVX2 and FMA where the CPU has them.

/// What the running CPU lets a kernel use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Whatever the build targets (SSE2 on a default x86-64 build); always available.
    Portable,
    /// 256-bit vectors with fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    }
}

/// `out += Σ values[k] · b[cols[k]]` over rows of `b` of length `out.len()`: one row of a
/// sparse x dense product.
pub(crate) fn sparse_axpy(isa: Isa, out: &mut [f32], cols: &[u32], values: &[f32], b: &[f32]) {
    match isa {
        Isa::Portable => sparse_axpy_body::<false>(out, cols, values, b),
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: `Isa::Avx2Fma` is only ever produced by `detect`, after checking that the CPU
        // has AVX2 and FMA, the features the function is compiled for.
        Isa::Avx2Fma => unsafe { sparse_axpy_avx2(out, cols, values, b) },
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
}
