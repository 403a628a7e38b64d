//! Ember's host kernels: plain Rust over slices, with no burn dependency, so that they can be
//! tested against scalar references and benchmarked in isolation.
//!
//! - [`Csr`]: compressed sparse rows, the compute format: [`Csr::matmul`] multiplies a sparse
//!   matrix by a dense one, and [`Csr::linear`] runs a pruned linear layer on a batch;
//! - [`Bitmap`]: one bit per element plus the non-zero values, the storage format whose size
//!   falls with sparsity at every level (CSR's 4-byte column indices only win past 50 %);
//! - [`int8`]: the `u8` x `i8` GEMM of quantized layers, with prepacked weights
//!   ([`PackedWeights`]), a dequantizing epilogue and kernels for AVX-512 VNNI, AVX2 and any
//!   CPU, chosen at run time ([`Int8Kernel::detect`]);
//! - [`binary`]: ±1 values packed a bit each ([`PackedSigns`]) and their XNOR-popcount product
//!   ([`xnor_gemm`], [`binary_linear`], [`binary_conv2d`]), with AVX-512 VPOPCNTDQ, POPCNT and portable kernels
//!   chosen at run time ([`BinaryKernel::detect`]);
//! - [`pool`]: max pooling of `f32` planes, the float layer between quantized convolutions;
//! - [`activation`]: GELU and the softmax of rows, vectorized, the float steps between a
//!   transformer's quantized matrix products.
//!
//! ```
//! use ember_kernels::Csr;
//!
//! // [[1, 0], [0, 2]] times [[3], [4]]
//! let a = Csr::from_dense(2, 2, &[1.0, 0.0, 0.0, 2.0])?;
//! assert_eq!(a.nnz(), 2);
//! assert_eq!(a.matmul(&[3.0, 4.0], 1)?, vec![3.0, 8.0]);
//! # Ok::<(), ember_kernels::KernelError>(())
//! ```

pub mod activation;
pub mod binary;
mod bitmap;
mod csr;
pub mod int8;
pub mod pool;
pub mod simd;

pub use binary::{BinaryKernel, PackedSigns, binary_conv2d, binary_linear, xnor_gemm};
pub use bitmap::Bitmap;
pub use csr::Csr;
pub use int8::{Int8Kernel, PackedWeights, WeightLayout};

/// What a kernel refuses.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    /// A buffer's length does not match the shape it is said to have.
    #[error("{what}: expected {expected} elements, got {actual}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Elements the shape implies.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// A dimension is too large: for the sparse formats' 32-bit indices, or for an integer
    /// product's exact `i32` sum.
    #[error("dimension {0} is too large for this kernel")]
    TooLarge(usize),
    /// A quantization parameter no integer kernel can use: a scale that is not positive and
    /// finite, a zero point outside its type.
    #[error("{what} {value} is not usable")]
    Parameter {
        /// Which parameter.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// Result of a kernel.
pub type Result<T> = std::result::Result<T, KernelError>;

pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            actual,
        })
    }
}
