//! One bit per element plus the non-zero values: the on-disk form of a pruned tensor.

use crate::{KernelError, Result, check_len};

/// A sparse vector of `len` elements: bit `i` of `bits` (little-endian within each byte) says
/// whether element `i` is stored, and `values` holds the stored elements in order.
///
/// It takes `len / 8 + 4 · nnz` bytes, against `4 · len` dense: smaller at any sparsity, where
/// CSR with 4-byte indices only wins above 50 %.
#[derive(Debug, Clone, PartialEq)]
pub struct Bitmap {
    len: usize,
    bits: Vec<u8>,
    values: Vec<f32>,
}

impl Bitmap {
    /// Keeps the non-zero elements of `dense`.
    pub fn from_dense(dense: &[f32]) -> Self {
        let mut bits = vec![0u8; dense.len().div_ceil(8)];
        let mut values = Vec::new();
        for (i, &v) in dense.iter().enumerate() {
            if v != 0.0 {
                bits[i / 8] |= 1 << (i % 8);
                values.push(v);
            }
        }
        Self {
            len: dense.len(),
            bits,
            values,
        }
    }

    /// Rebuilds a bitmap from stored parts, checking that they agree: `bits` has
    /// `ceil(len / 8)` bytes, no bit past `len` is set, and one value is given per set bit.
    pub fn from_parts(len: usize, bits: Vec<u8>, values: Vec<f32>) -> Result<Self> {
        check_len("bitmap bytes", len.div_ceil(8), bits.len())?;
        if !len.is_multiple_of(8) && bits.last().is_some_and(|&b| b >> (len % 8) != 0) {
            return Err(KernelError::Length {
                what: "bitmap bits (a bit is set past the end)",
                expected: len,
                actual: bits.len() * 8,
            });
        }
        let set = bits.iter().map(|b| b.count_ones() as usize).sum();
        check_len("bitmap values (one per set bit)", set, values.len())?;
        Ok(Self { len, bits, values })
    }

    /// The dense vector, zeros restored.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.len];
        let mut values = self.values.iter();
        for (i, slot) in dense.iter_mut().enumerate() {
            if self.bits[i / 8] & (1 << (i % 8)) != 0 {
                // `from_parts` checked one value per set bit.
                *slot = values.next().copied().unwrap_or(0.0);
            }
        }
        dense
    }

    /// Elements of the dense vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the dense vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stored elements.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// The presence bits.
    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    /// The stored values, in element order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Bytes the bits and values take.
    pub fn storage_bytes(&self) -> usize {
        self.bits.len() + 4 * self.values.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_bits() {
        let b = Bitmap::from_dense(&[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
        assert_eq!(b.bits(), &[0b0000_0010, 0b0000_0001]);
        assert_eq!(b.values(), &[2.0, 3.0]);
        assert_eq!(b.storage_bytes(), 2 + 8);
    }

    #[test]
    fn inconsistent_parts_are_errors() {
        // Two bits set, one value.
        assert!(Bitmap::from_parts(8, vec![0b11], vec![1.0]).is_err());
        // Wrong byte count.
        assert!(Bitmap::from_parts(9, vec![0], vec![]).is_err());
        // Bit 3 set in a 3-element vector.
        assert!(Bitmap::from_parts(3, vec![0b1000], vec![1.0]).is_err());
        assert!(Bitmap::from_parts(3, vec![0b101], vec![1.0, 2.0]).is_ok());
    }

    proptest! {
        #[test]
        fn round_trip(dense in prop::collection::vec(
            prop_oneof![Just(0.0f32), -5.0f32..5.0], 0..100)) {
            let b = Bitmap::from_dense(&dense);
            prop_assert_eq!(b.to_dense(), dense.clone());
            let again = Bitmap::from_parts(b.len(), b.bits().to_vec(), b.values().to_vec()).unwrap();
            prop_assert_eq!(&again, &b);
            prop_assert!(b.storage_bytes() <= dense.len() / 8 + 1 + 4 * dense.len());
        }
    }
}
