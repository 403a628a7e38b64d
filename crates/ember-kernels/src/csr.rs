//! Compressed sparse rows and the sparse x dense product.

use rayon::prelude::*;

use crate::simd::{Isa, LANES, sparse_axpy, sparse_rows};
use crate::{KernelError, Result, check_len};

/// Multiply-adds from which [`Csr::matmul`] splits its rows across threads.
const PARALLEL_MIN_MACS: usize = 8 << 20;
/// Multiply-adds from which [`Csr::linear`] splits its batch blocks across threads: at 4 M
/// (LeNet-300-100's first layer at 94 % sparsity, batch 256) two threads took 195 µs against
/// 277 µs for one, in a one-off timing while this was written (2 cores of an Intel Xeon with
/// AVX-512, the AVX2 path); `cargo bench -p ember-benches --bench sparse` times both.
const LINEAR_PARALLEL_MIN_MACS: usize = 2 << 20;

/// A sparse `rows x cols` matrix in compressed sparse row form: row `r` holds the values
/// `values[row_ptr[r]..row_ptr[r + 1]]` at columns `col_idx[..]` of the same range, in
/// increasing column order. Explicit zeros are never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
}

impl Csr {
    /// Compresses a dense row-major `rows x cols` matrix, dropping its zeros.
    pub fn from_dense(rows: usize, cols: usize, dense: &[f32]) -> Result<Self> {
        check_len("dense matrix", rows * cols, dense.len())?;
        index(cols)?;
        index(dense.len())?;
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        let mut values = Vec::new();
        row_ptr.push(0);
        for row in dense.chunks_exact(cols.max(1)).take(rows) {
            for (col, &value) in row.iter().enumerate() {
                if value != 0.0 {
                    col_idx.push(col as u32);
                    values.push(value);
                }
            }
            row_ptr.push(values.len() as u32);
        }
        // A matrix with zero columns has `rows` empty rows.
        row_ptr.resize(rows + 1, 0);
        Ok(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
        })
    }

    /// Compresses the transpose of a dense row-major `rows x cols` matrix: the form a linear
    /// layer stored as burn does (`[d_input, d_output]`) needs for [`Csr::linear`].
    pub fn from_dense_transposed(rows: usize, cols: usize, dense: &[f32]) -> Result<Self> {
        check_len("dense matrix", rows * cols, dense.len())?;
        Self::from_dense(cols, rows, &transpose(dense, rows, cols))
    }

    /// The dense row-major matrix.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            let (cols, values) = self.row(r);
            for (&c, &v) in cols.iter().zip(values) {
                dense[r * self.cols + c as usize] = v;
            }
        }
        dense
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored (non-zero) values.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Fraction of elements that are zero, in `[0, 1]` (0 for an empty matrix).
    pub fn sparsity(&self) -> f64 {
        let numel = self.rows * self.cols;
        if numel == 0 {
            0.0
        } else {
            1.0 - self.nnz() as f64 / numel as f64
        }
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let range = self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize;
        (&self.col_idx[range.clone()], &self.values[range])
    }

    /// `self · b` for a dense row-major `b` of shape `cols x n`: a dense row-major `rows x n`.
    ///
    /// Each stored value scales one contiguous row of `b` into one row of the result, so the
    /// inner loop is a vectorized axpy over `n` (AVX2 and FMA where the CPU has them) and the
    /// work is proportional to `nnz · n`; large products split their rows across rayon's pool.
    pub fn matmul(&self, b: &[f32], n: usize) -> Result<Vec<f32>> {
        check_len("right-hand matrix", self.cols * n, b.len())?;
        let mut out = vec![0.0; self.rows * n];
        if n == 0 {
            return Ok(out);
        }
        let isa = Isa::detect();
        let row = |(r, out_row): (usize, &mut [f32])| {
            let (cols, values) = self.row(r);
            sparse_axpy(isa, out_row, cols, values, b);
        };
        // Output rows are independent and each row's sum runs in the same order on any thread,
        // so results do not depend on the thread count. Waking the pool costs about 100 µs on
        // the 2-core development machine: below PARALLEL_MIN_MACS one thread is faster
        // (`cargo bench -p ember-benches --bench sparse`).
        if self.nnz() * n >= PARALLEL_MIN_MACS {
            out.par_chunks_mut(n).enumerate().for_each(row);
        } else {
            out.chunks_mut(n).enumerate().for_each(row);
        }
        Ok(out)
    }

    /// A linear layer `x · Wᵀ` with `self = Wᵀ` of shape `d_output x d_input` (see
    /// [`Csr::from_dense_transposed`]) and `x` row-major `batch x d_input`: row-major
    /// `batch x d_output`, the same as burn's `x.matmul(weight)`.
    ///
    /// The batch goes in blocks of 32 samples: each block's inputs are laid out input by input
    /// (32 lanes, in cache), and every output row sums its stored values times those lanes in
    /// registers. Transposing the whole batch and its result around [`Csr::matmul`] instead
    /// cost more than the product itself (a one-off timing while this was written, on the AVX2
    /// path: 220 against 164 µs for LeNet-300-100's first layer at 94 % sparsity and batch
    /// 256). Blocks split across rayon's pool when the product is large.
    pub fn linear(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        check_len("input batch", batch * self.cols, x.len())?;
        let mut out = vec![0.0; batch * self.rows];
        if self.rows == 0 {
            return Ok(out);
        }
        let isa = Isa::detect();
        let block = |(b, out): (usize, &mut [f32])| {
            let samples = out.len() / self.rows;
            let first = b * LANES * self.cols;
            let lanes = lanes_of(&x[first..first + samples * self.cols], self.cols);
            let mut sums = vec![[0.0f32; LANES]; self.rows];
            let matrix = (&self.row_ptr[..], &self.col_idx[..], &self.values[..]);
            sparse_rows(isa, matrix, &lanes, &mut sums);
            for (s, out_row) in out.chunks_exact_mut(self.rows).enumerate() {
                for (o, sum) in out_row.iter_mut().zip(&sums) {
                    *o = sum[s];
                }
            }
        };
        // Each block is computed the same way on any thread: results do not depend on the
        // thread count.
        let chunk = LANES * self.rows;
        if self.nnz() * batch >= LINEAR_PARALLEL_MIN_MACS {
            out.par_chunks_mut(chunk).enumerate().for_each(block);
        } else {
            out.chunks_mut(chunk).enumerate().for_each(block);
        }
        Ok(out)
    }
}

/// `rows` (row-major, `cols` wide, at most [`LANES`] of them) laid out column by column: lane
/// `s` of entry `c` is `rows[s][c]`. A full block reads its rows in lockstep, which measured
/// three times faster than one row after another (every write of a row lands in another cache
/// line).
fn lanes_of(rows: &[f32], cols: usize) -> Vec<[f32; LANES]> {
    let mut lanes = vec![[0.0f32; LANES]; cols];
    let samples = rows.len() / cols.max(1);
    if samples == LANES {
        let rows: [&[f32]; LANES] = std::array::from_fn(|s| &rows[s * cols..(s + 1) * cols]);
        for (c, lane) in lanes.iter_mut().enumerate() {
            for (l, row) in lane.iter_mut().zip(&rows) {
                *l = row[c];
            }
        }
    } else {
        for (s, row) in rows.chunks_exact(cols.max(1)).enumerate() {
            for (lane, &v) in lanes.iter_mut().zip(row) {
                lane[s] = v;
            }
        }
    }
    lanes
}

fn index(n: usize) -> Result<()> {
    if u32::try_from(n).is_ok() {
        Ok(())
    } else {
        Err(KernelError::TooLarge(n))
    }
}

/// The transpose of a dense row-major `rows x cols` matrix, in square tiles so that both the
/// reads and the writes stay in cache (a plain double loop strides through memory on one side
/// and cost more than the sparse product itself at high sparsity).
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0.0; m.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The textbook triple loop, in f64.
    fn reference_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for l in 0..k {
                    acc += f64::from(a[i * k + l]) * f64::from(b[l * n + j]);
                }
                c[i * n + j] = acc as f32;
            }
        }
        c
    }

    /// A dense matrix with roughly `sparsity` of its entries set to zero.
    fn sparse_matrix(max_dim: usize) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
        (0..max_dim, 0..max_dim, 0.0f64..1.0).prop_flat_map(|(rows, cols, sparsity)| {
            let entry = (0.0f64..1.0, -4.0f32..4.0)
                .prop_map(move |(u, v)| if u < sparsity { 0.0 } else { v });
            prop::collection::vec(entry, rows * cols).prop_map(move |m| (rows, cols, m))
        })
    }

    #[test]
    fn hand_computed_product() {
        // [[1 0 2]   [[1 2]     [[1+10 2+12]
        //  [0 0 0] ·  [3 4]  =   [0    0   ]
        //  [0 3 0]]   [5 6]]     [9    12  ]]
        let a = Csr::from_dense(3, 3, &[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0]).unwrap();
        assert_eq!(a.nnz(), 3);
        assert!((a.sparsity() - 6.0 / 9.0).abs() < 1e-12);
        let c = a.matmul(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2).unwrap();
        assert_eq!(c, vec![11.0, 14.0, 0.0, 0.0, 9.0, 12.0]);
    }

    #[test]
    fn the_threaded_split_matches_the_reference() {
        // nnz · n above PARALLEL_MIN_MACS, so rows are split across rayon's pool.
        let (m, k, n) = (128, 512, 512);
        let a: Vec<f32> = (0..m * k)
            .map(|i| {
                if i % 3 == 0 {
                    ((i % 17) as f32) - 8.0
                } else {
                    0.0
                }
            })
            .collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32) * 0.5 - 3.0).collect();
        let csr = Csr::from_dense(m, k, &a).unwrap();
        assert!(csr.nnz() * n >= PARALLEL_MIN_MACS);
        let got = csr.matmul(&b, n).unwrap();
        let expected = reference_matmul(&a, &b, m, k, n);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-3 * (1.0 + e.abs()), "{g} vs {e}");
        }
        // One thread gives the same bits: each row sums in the same order.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| csr.matmul(&b, n).unwrap()), got);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert_eq!(
            Csr::from_dense(2, 3, &[0.0; 5]),
            Err(KernelError::Length {
                what: "dense matrix",
                expected: 6,
                actual: 5
            })
        );
        let a = Csr::from_dense(2, 3, &[0.0; 6]).unwrap();
        assert!(a.matmul(&[0.0; 5], 2).is_err());
        assert!(a.linear(&[0.0; 5], 2).is_err());
    }

    proptest! {
        #[test]
        fn dense_round_trip((rows, cols, m) in sparse_matrix(12)) {
            let a = Csr::from_dense(rows, cols, &m).unwrap();
            prop_assert_eq!(a.to_dense(), m.clone());
            prop_assert_eq!(a.nnz(), m.iter().filter(|&&v| v != 0.0).count());
        }

        #[test]
        fn matmul_matches_reference((rows, cols, m) in sparse_matrix(12), n in 0usize..9,
                                    seed in any::<u32>()) {
            let b: Vec<f32> = (0..cols * n)
                .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 97) as f32 / 13.0 - 3.0)
                .collect();
            let got = Csr::from_dense(rows, cols, &m).unwrap().matmul(&b, n).unwrap();
            let want = reference_matmul(&m, &b, rows, cols, n);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }

        #[test]
        fn linear_matches_dense_layer((d_in, d_out, w) in sparse_matrix(10), batch in 0usize..40) {
            // w is burn's layout, [d_input, d_output]; y = x · w.
            let x: Vec<f32> = (0..batch * d_in).map(|i| (i % 7) as f32 - 3.0).collect();
            let layer = Csr::from_dense_transposed(d_in, d_out, &w).unwrap();
            let got = layer.linear(&x, batch).unwrap();
            let want = reference_matmul(&x, &w, batch, d_in, d_out);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }
}
