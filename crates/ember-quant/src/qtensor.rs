//! A quantized tensor on the host: integers packed at their bit width, with the scales and
//! zero points that give them back as floats.

use serde::{Deserialize, Serialize};

use crate::scheme::{Layout, Mode, QParams, QScheme, dequantize_value, quantize_value};
use crate::{Error, Result};

/// A tensor quantized with a [`QScheme`]: 8-bit values one per byte, 4-bit values two per
/// byte (the element at an even index in the low nibble).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QTensor {
    scheme: QScheme,
    shape: Vec<usize>,
    params: QParams,
    data: Vec<u8>,
}

impl QTensor {
    /// Quantize `values` (a tensor of `shape`, row-major) with min/max ranges per parameter
    /// set. `what` names the tensor in errors: NaN or Inf, an all-zero tensor, a scheme that
    /// does not fit the shape.
    pub fn quantize(values: &[f32], shape: &[usize], scheme: QScheme, what: &str) -> Result<Self> {
        check_finite(values, what)?;
        let ranges = scheme.ranges(values, shape, what)?;
        let params = scheme.qparams(&ranges, what)?;
        Self::with_params(values, shape, scheme, params, what)
    }

    /// Quantize `values` with given scales and zero points.
    pub fn with_params(
        values: &[f32],
        shape: &[usize],
        scheme: QScheme,
        params: QParams,
        what: &str,
    ) -> Result<Self> {
        check_finite(values, what)?;
        let layout = checked_layout(&scheme, shape, &params, values.len(), what)?;
        // Parameters from elsewhere (learned steps, a file): a zero scale would divide by zero.
        params.check(&scheme, layout.count(), what)?;
        let bounds = scheme.bounds();
        let ints = values.iter().enumerate().map(|(i, &x)| {
            let p = layout.index(i);
            quantize_value(x, params.scale[p], params.zero_point[p], bounds)
        });
        let data = pack(ints, scheme.qtype.bits(), values.len());
        Ok(Self {
            scheme,
            shape: shape.to_vec(),
            params,
            data,
        })
    }

    /// Rebuild a tensor from its stored parts (a file), checking that they fit together.
    pub fn from_parts(
        scheme: QScheme,
        shape: Vec<usize>,
        params: QParams,
        data: Vec<u8>,
        what: &str,
    ) -> Result<Self> {
        let numel: usize = shape.iter().product();
        let layout = checked_layout(&scheme, &shape, &params, numel, what)?;
        params.check(&scheme, layout.count(), what)?;
        let expected = packed_len(numel, scheme.qtype.bits());
        if data.len() != expected {
            return Err(Error::Scheme {
                what: what.to_string(),
                reason: format!(
                    "{} bytes of data, shape {shape:?} needs {expected}",
                    data.len()
                ),
            });
        }
        let (qmin, qmax) = scheme.bounds();
        let tensor = Self {
            scheme,
            shape,
            params,
            data,
        };
        if tensor.values().iter().any(|q| !(qmin..=qmax).contains(q)) {
            return Err(Error::Scheme {
                what: what.to_string(),
                reason: format!(
                    "a stored value is outside {qmin}..={qmax} (the scheme's {} bits)",
                    scheme.width()
                ),
            });
        }
        Ok(tensor)
    }

    /// The scheme.
    pub fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Scales and zero points.
    pub fn params(&self) -> &QParams {
        &self.params
    }

    /// The packed integers.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The integers, unpacked.
    pub fn values(&self) -> Vec<i32> {
        unpack(
            &self.data,
            self.scheme.qtype.bits(),
            self.scheme.qtype.signed(),
            self.numel(),
        )
    }

    /// The floats the integers stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let Ok(layout) = self.scheme.layout(&self.shape, "") else {
            unreachable!("a QTensor's scheme fits its shape by construction");
        };
        self.values()
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let p = layout.index(i);
                dequantize_value(q, self.params.scale[p], self.params.zero_point[p])
            })
            .collect()
    }

    /// Bytes it takes on disk: the packed integers, a 4-byte scale per set and, in affine
    /// schemes, a 4-byte zero point per set (a symmetric scheme's zero point is implied).
    pub fn storage_bytes(&self) -> usize {
        let sets = self.params.scale.len();
        let zero_points = match self.scheme.mode {
            Mode::Affine => 4 * sets,
            Mode::Symmetric => 0,
        };
        self.data.len() + 4 * sets + zero_points
    }
}

/// A typed error naming the first NaN or Inf in `values`.
pub fn check_finite(values: &[f32], what: &str) -> Result<()> {
    match values.iter().find(|v| !v.is_finite()) {
        None => Ok(()),
        Some(&first) => Err(Error::NonFinite {
            what: what.to_string(),
            count: values.iter().filter(|v| !v.is_finite()).count(),
            first,
        }),
    }
}

fn checked_layout(
    scheme: &QScheme,
    shape: &[usize],
    params: &QParams,
    numel: usize,
    what: &str,
) -> Result<Layout> {
    let layout = scheme.layout(shape, what)?;
    let fits = shape.iter().product::<usize>() == numel
        && params.scale.len() == layout.count()
        && params.zero_point.len() == layout.count();
    if !fits {
        return Err(Error::Scheme {
            what: what.to_string(),
            reason: format!(
                "{numel} values and {} scales / {} zero points for shape {shape:?}, which needs \
                 {} of each",
                params.scale.len(),
                params.zero_point.len(),
                layout.count()
            ),
        });
    }
    Ok(layout)
}

fn packed_len(numel: usize, bits: u32) -> usize {
    if bits == 4 { numel.div_ceil(2) } else { numel }
}

fn pack(ints: impl Iterator<Item = i32>, bits: u32, numel: usize) -> Vec<u8> {
    let mut data = vec![0u8; packed_len(numel, bits)];
    for (i, q) in ints.enumerate() {
        if bits == 4 {
            // Two's complement nibbles: -1 is 0xF.
            data[i / 2] |= ((q as u8) & 0x0F) << (4 * (i % 2));
        } else {
            data[i] = q as u8;
        }
    }
    data
}

fn unpack(data: &[u8], bits: u32, signed: bool, numel: usize) -> Vec<i32> {
    (0..numel)
        .map(|i| {
            if bits == 4 {
                let nibble = (data[i / 2] >> (4 * (i % 2))) & 0x0F;
                if signed {
                    ((nibble << 4) as i8 >> 4) as i32
                } else {
                    nibble as i32
                }
            } else if signed {
                data[i] as i8 as i32
            } else {
                data[i] as i32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::scheme::QType;

    #[test]
    fn int4_packs_two_per_byte_with_sign() {
        let scheme = QScheme::new(QType::Int4, Mode::Symmetric);
        let params = QParams {
            scale: vec![1.0],
            zero_point: vec![0],
        };
        let t =
            QTensor::with_params(&[-8.0, 7.0, -1.0, 0.0, 3.0], &[5], scheme, params, "x").unwrap();
        assert_eq!(t.data(), &[0x78, 0x0F, 0x03]);
        assert_eq!(t.values(), vec![-8, 7, -1, 0, 3]);
        assert_eq!(t.dequantize(), vec![-8.0, 7.0, -1.0, 0.0, 3.0]);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let s = QScheme::new(QType::Int8, Mode::Symmetric);
        assert!(matches!(
            QTensor::quantize(&[1.0, f32::NAN], &[2], s, "fc.weight"),
            Err(Error::NonFinite { count: 1, .. })
        ));
        assert!(matches!(
            QTensor::quantize(&[0.0; 4], &[4], s, "fc.weight"),
            Err(Error::ZeroRange { .. })
        ));
        assert!(matches!(
            QTensor::quantize(&[1.0; 4], &[3], s, "fc.weight"),
            Err(Error::Scheme { .. })
        ));
        let good = QTensor::quantize(&[1.0, -2.0], &[2], s, "w").unwrap();
        let (scheme, shape, params) = (good.scheme, good.shape.clone(), good.params.clone());
        assert!(matches!(
            QTensor::from_parts(scheme, shape, params, vec![1], "w"),
            Err(Error::Scheme { .. })
        ));
    }
}
