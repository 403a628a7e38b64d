//! Quantization schemes and their arithmetic, as plain scalar code: the reference every other
//! part of Ember's quantization is tested against.
//!
//! `q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)` and
//! `x̂ = (q − zero_point) · scale`, with scales chosen from a range as PyTorch's observers do
//! (`torch.ao.quantization.observer._calculate_qparams`).

use ember_observe::Range;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The integer type quantized values are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QType {
    /// Signed 8 bits, -128..=127.
    Int8,
    /// Unsigned 8 bits, 0..=255.
    UInt8,
    /// Signed 4 bits, -8..=7, stored two per byte.
    Int4,
    /// Unsigned 4 bits, 0..=15, stored two per byte.
    UInt4,
}

impl QType {
    /// Bits per value.
    pub fn bits(self) -> u32 {
        match self {
            Self::Int8 | Self::UInt8 => 8,
            Self::Int4 | Self::UInt4 => 4,
        }
    }

    /// Whether values are signed.
    pub fn signed(self) -> bool {
        matches!(self, Self::Int8 | Self::Int4)
    }
}

/// How a range maps onto the integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Zero maps to the middle of the integer range (0 for signed types); the range is
    /// `[-a, a]` with `a` the larger magnitude. Cheapest in integer kernels.
    Symmetric,
    /// A zero point shifts the grid so that `[min, max]` (extended to contain 0) fills the
    /// integer range: no level is wasted on a one-sided distribution such as ReLU outputs.
    Affine,
}

/// Which elements share a scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per index along `axis` (the output channels of a weight, say), for a dimension
    /// of any size.
    PerChannel {
        /// The channel axis.
        axis: usize,
    },
    /// One scale per run of `size` consecutive elements along `axis`, separately for every
    /// index of the other axes (the last run may be shorter).
    PerGroup {
        /// The axis the groups run along.
        axis: usize,
        /// Elements per group.
        size: usize,
    },
    /// One scale per run of `size` consecutive elements of the axes from `axis` on, flattened,
    /// separately for every index of the axes before it: a convolution's weight
    /// `[out, in, kh, kw]` with `axis` 1 groups each filter's `in · kh · kw` values in order,
    /// as the matrix its GEMM multiplies (grouping along `in` alone would give a 1-channel
    /// filter one scale per weight).
    PerFlatGroup {
        /// The first of the flattened axes.
        axis: usize,
        /// Elements per group.
        size: usize,
    },
}

/// A complete quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QScheme {
    /// The integer type.
    pub qtype: QType,
    /// Symmetric or affine.
    pub mode: Mode,
    /// Which elements share parameters.
    pub granularity: Granularity,
    /// Use one bit less of range (-64..=63 for int8), as PyTorch's fbgemm does to keep 16-bit
    /// intermediate sums from saturating.
    pub reduce_range: bool,
    /// A bit width narrower than the type's (2 to its [`QType::bits`]; `None`: the type's
    /// own), as PyTorch's `quant_min` / `quant_max` narrow a `qint8`: 2-bit weights are the
    /// integers -2..=1 stored in an [`QType::Int4`]. Checked by [`QScheme::check`], which
    /// every pass calls.
    #[serde(default)]
    pub bits: Option<u32>,
}

/// The narrowest bit width an integer scheme has (one bit is binary: see [`crate::binary`]).
pub const MIN_BITS: u32 = 2;

impl QScheme {
    /// A per-tensor scheme.
    pub fn new(qtype: QType, mode: Mode) -> Self {
        Self {
            qtype,
            mode,
            granularity: Granularity::PerTensor,
            reduce_range: false,
            bits: None,
        }
    }

    /// A scheme of `bits` bits (2 to 8) in the narrowest type that holds them: `Int4` or
    /// `UInt4` up to 4 bits, `Int8` or `UInt8` above. A width outside 2..=8 is
    /// [`Error::BitWidth`].
    pub fn with_width(bits: u32, signed: bool, mode: Mode) -> Result<Self> {
        let qtype = match (bits <= 4, signed) {
            (true, true) => QType::Int4,
            (true, false) => QType::UInt4,
            (false, true) => QType::Int8,
            (false, false) => QType::UInt8,
        };
        let scheme = Self::new(qtype, mode).with_bits(bits);
        scheme.check("scheme")?;
        Ok(scheme)
    }

    /// The same scheme narrowed to `bits` bits (see [`QScheme::bits`]; checked by
    /// [`QScheme::check`]).
    pub fn with_bits(mut self, bits: u32) -> Self {
        self.bits = Some(bits);
        self
    }

    /// The bit width the integers use: [`QScheme::bits`] or the type's, one less with
    /// `reduce_range`.
    pub fn width(&self) -> u32 {
        let bits = self.bits.unwrap_or(self.qtype.bits());
        bits.saturating_sub(u32::from(self.reduce_range))
    }

    /// Whether the scheme can be used: a bit width from 2 to the type's (one bit is binary),
    /// and at least 2 bits left after `reduce_range`. Every pass checks its schemes first, so
    /// that a width read from a config file is a typed error, not a shift out of range.
    pub fn check(&self, what: &str) -> Result<()> {
        let max = self.qtype.bits();
        let bits = self.bits.unwrap_or(max);
        if !(MIN_BITS..=max).contains(&bits) || self.width() < MIN_BITS {
            return Err(Error::BitWidth {
                what: what.to_string(),
                bits,
                reduce_range: self.reduce_range,
                qtype: self.qtype,
            });
        }
        Ok(())
    }

    /// The same scheme with one scale per index along `axis`.
    pub fn per_channel(mut self, axis: usize) -> Self {
        self.granularity = Granularity::PerChannel { axis };
        self
    }

    /// The same scheme with one scale per `size` elements along `axis`.
    pub fn per_group(mut self, axis: usize, size: usize) -> Self {
        self.granularity = Granularity::PerGroup { axis, size };
        self
    }

    /// The same scheme with one scale per `size` elements of the axes from `axis` on,
    /// flattened (see [`Granularity::PerFlatGroup`]).
    pub fn per_flat_group(mut self, axis: usize, size: usize) -> Self {
        self.granularity = Granularity::PerFlatGroup { axis, size };
        self
    }

    /// The same scheme with `reduce_range`.
    pub fn with_reduce_range(mut self) -> Self {
        self.reduce_range = true;
        self
    }

    /// The smallest and largest integer. For a scheme [`QScheme::check`] refuses, the bounds
    /// of the nearest width it accepts (never a shift out of range).
    pub fn bounds(&self) -> (i32, i32) {
        let bits = self.width().clamp(MIN_BITS, self.qtype.bits());
        if self.qtype.signed() {
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        } else {
            (0, (1 << bits) - 1)
        }
    }

    /// How many integers there are: 256 for 8 bits.
    pub fn levels(&self) -> u32 {
        let (lo, hi) = self.bounds();
        (hi - lo + 1) as u32
    }

    /// Which parameter set each element of a tensor of `shape` uses.
    pub fn layout(&self, shape: &[usize], what: &str) -> Result<Layout> {
        let numel = shape.iter().product();
        let axis_error = |axis: usize| Error::Scheme {
            what: what.to_string(),
            reason: format!("axis {axis} is out of range for shape {shape:?}"),
        };
        Ok(match self.granularity {
            Granularity::PerTensor => Layout {
                numel,
                count: 1,
                grouping: None,
            },
            Granularity::PerChannel { axis } => {
                let dim = *shape.get(axis).ok_or_else(|| axis_error(axis))?;
                Layout {
                    numel,
                    count: dim,
                    grouping: Some(Grouping {
                        inner: shape[axis + 1..].iter().product(),
                        dim,
                        group: None,
                    }),
                }
            }
            Granularity::PerGroup { axis, size } => {
                let dim = *shape.get(axis).ok_or_else(|| axis_error(axis))?;
                if size == 0 {
                    return Err(Error::Scheme {
                        what: what.to_string(),
                        reason: "group size 0".into(),
                    });
                }
                let inner: usize = shape[axis + 1..].iter().product();
                let outer: usize = shape[..axis].iter().product();
                let groups = dim.div_ceil(size);
                Layout {
                    numel,
                    count: outer * groups * inner,
                    grouping: Some(Grouping {
                        inner,
                        dim,
                        group: Some((size, groups)),
                    }),
                }
            }
            Granularity::PerFlatGroup { axis, size } => {
                if axis >= shape.len() {
                    return Err(axis_error(axis));
                }
                if size == 0 {
                    return Err(Error::Scheme {
                        what: what.to_string(),
                        reason: "group size 0".into(),
                    });
                }
                let dim: usize = shape[axis..].iter().product();
                let outer: usize = shape[..axis].iter().product();
                let groups = dim.div_ceil(size);
                Layout {
                    numel,
                    count: outer * groups,
                    grouping: Some(Grouping {
                        inner: 1,
                        dim,
                        group: Some((size, groups)),
                    }),
                }
            }
        })
    }

    /// The min/max range of each parameter set of `values` (a tensor of `shape`, row-major).
    pub fn ranges(&self, values: &[f32], shape: &[usize], what: &str) -> Result<Vec<Range>> {
        let layout = self.layout(shape, what)?;
        if layout.numel != values.len() {
            return Err(Error::Scheme {
                what: what.to_string(),
                reason: format!("{} values do not fill shape {shape:?}", values.len()),
            });
        }
        let mut ranges = vec![
            Range {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
            };
            layout.count
        ];
        for (i, &v) in values.iter().enumerate() {
            let r = &mut ranges[layout.index(i)];
            r.min = r.min.min(v);
            r.max = r.max.max(v);
        }
        Ok(ranges)
    }

    /// Scale and zero point for each range. A range that is all zero is an error when it is
    /// the only one; among several (a pruned output channel) it gets scale 1, which represents
    /// its zeros exactly.
    pub fn qparams(&self, ranges: &[Range], what: &str) -> Result<QParams> {
        self.check(what)?;
        let (qmin, qmax) = self.bounds();
        let zero_range = |r: &Range| r.min.min(0.0) == 0.0 && r.max.max(0.0) == 0.0;
        if ranges.is_empty() || ranges.iter().all(zero_range) {
            return Err(Error::ZeroRange {
                what: what.to_string(),
            });
        }
        let mut params = QParams {
            scale: Vec::with_capacity(ranges.len()),
            zero_point: Vec::with_capacity(ranges.len()),
        };
        for r in ranges {
            if !(r.min.is_finite() && r.max.is_finite()) {
                return Err(Error::NonFinite {
                    what: what.to_string(),
                    count: 1,
                    first: if r.min.is_finite() { r.max } else { r.min },
                });
            }
            let (lo, hi) = (r.min.min(0.0), r.max.max(0.0));
            let (scale, zero_point) = if lo == 0.0 && hi == 0.0 {
                (1.0, self.symmetric_zero_point())
            } else {
                match self.mode {
                    Mode::Symmetric => {
                        let magnitude = (-lo).max(hi);
                        let scale = magnitude / ((qmax - qmin) as f32 / 2.0);
                        (scale.max(f32::EPSILON), self.symmetric_zero_point())
                    }
                    Mode::Affine => {
                        let scale = ((hi - lo) / (qmax - qmin) as f32).max(f32::EPSILON);
                        let zp = qmin - (lo / scale).round_ties_even() as i32;
                        (scale, zp.clamp(qmin, qmax))
                    }
                }
            };
            params.scale.push(scale);
            params.zero_point.push(zero_point);
        }
        Ok(params)
    }

    /// The zero point of a symmetric scheme: 0 for signed types, the middle for unsigned.
    pub fn symmetric_zero_point(&self) -> i32 {
        let (qmin, qmax) = self.bounds();
        if self.qtype.signed() {
            0
        } else {
            (qmin + qmax + 1) / 2
        }
    }
}

/// Where each element of a tensor finds its scale and zero point; see [`QScheme::layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    numel: usize,
    count: usize,
    /// `None` per tensor.
    grouping: Option<Grouping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grouping {
    /// Elements after the axis (its stride).
    inner: usize,
    /// Length of the axis.
    dim: usize,
    /// Elements per group and groups along the axis; `None` per channel.
    group: Option<(usize, usize)>,
}

impl Layout {
    /// How many parameter sets the tensor has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The parameter set of the element at flat (row-major) index `i`.
    pub fn index(&self, i: usize) -> usize {
        let Some(g) = self.grouping else { return 0 };
        let along = (i / g.inner) % g.dim;
        match g.group {
            None => along,
            Some((size, groups)) => {
                let outer = i / (g.inner * g.dim);
                (outer * groups + along / size) * g.inner + i % g.inner
            }
        }
    }
}

/// Scales and zero points, one per parameter set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    /// Step between neighbouring integers, in float units.
    pub scale: Vec<f32>,
    /// The integer that represents 0.0.
    pub zero_point: Vec<i32>,
}

impl QParams {
    /// Checks parameters that come from outside (a file): `count` scales and zero points, every
    /// scale positive and finite (a zero scale divides by zero), every zero point inside the
    /// scheme's bounds.
    pub fn check(&self, scheme: &QScheme, count: usize, what: &str) -> Result<()> {
        let error = |reason: String| Error::Scheme {
            what: what.to_string(),
            reason,
        };
        scheme.check(what)?;
        if self.scale.len() != count || self.zero_point.len() != count {
            return Err(error(format!(
                "{} scales and {} zero points where {count} of each are needed",
                self.scale.len(),
                self.zero_point.len()
            )));
        }
        if let Some(scale) = self.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(error(format!(
                "scale {scale} is not a positive finite number"
            )));
        }
        let (qmin, qmax) = scheme.bounds();
        if let Some(z) = self.zero_point.iter().find(|z| !(qmin..=qmax).contains(*z)) {
            return Err(error(format!("zero point {z} is outside {qmin}..={qmax}")));
        }
        Ok(())
    }
}

/// `clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`.
pub fn quantize_value(x: f32, scale: f32, zero_point: i32, bounds: (i32, i32)) -> i32 {
    let q = (x / scale).round_ties_even() as i64 + zero_point as i64;
    q.clamp(bounds.0 as i64, bounds.1 as i64) as i32
}

/// `(q − zero_point) · scale`.
pub fn dequantize_value(q: i32, scale: f32, zero_point: i32) -> f32 {
    (q - zero_point) as f32 * scale
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bounds_of_every_type() {
        let s = |t| QScheme::new(t, Mode::Symmetric);
        assert_eq!(s(QType::Int8).bounds(), (-128, 127));
        assert_eq!(s(QType::UInt8).bounds(), (0, 255));
        assert_eq!(s(QType::Int4).bounds(), (-8, 7));
        assert_eq!(s(QType::UInt4).bounds(), (0, 15));
        assert_eq!(s(QType::Int8).with_reduce_range().bounds(), (-64, 63));
        assert_eq!(s(QType::UInt8).with_reduce_range().bounds(), (0, 127));
        assert_eq!(s(QType::Int4).levels(), 16);
        // Narrower widths, as PyTorch's quant_min / quant_max: 2-bit signed is -2..=1.
        assert_eq!(s(QType::Int4).with_bits(2).bounds(), (-2, 1));
        assert_eq!(s(QType::Int8).with_bits(3).bounds(), (-4, 3));
        assert_eq!(s(QType::UInt8).with_bits(5).bounds(), (0, 31));
        assert_eq!(
            s(QType::Int8).with_bits(6).with_reduce_range().bounds(),
            (-16, 15)
        );
    }

    #[test]
    fn widths_from_2_to_8_and_typed_errors_outside() {
        for bits in 2..=8 {
            for signed in [true, false] {
                let scheme = QScheme::with_width(bits, signed, Mode::Affine).unwrap();
                assert_eq!(scheme.levels(), 1 << bits, "{bits} bits");
                assert_eq!(scheme.qtype.bits(), if bits <= 4 { 4 } else { 8 });
            }
        }
        for bits in [0, 1, 9, 32, u32::MAX] {
            assert!(matches!(
                QScheme::with_width(bits, true, Mode::Symmetric),
                Err(Error::BitWidth { bits: b, .. }) if b == bits
            ));
        }
        // Wider than the storage type, or one bit left after reduce_range.
        let int4 = QScheme::new(QType::Int4, Mode::Symmetric);
        assert!(matches!(
            int4.with_bits(5).qparams(&[Range { min: -1.0, max: 1.0 }], "fc.weight"),
            Err(Error::BitWidth { what, bits: 5, .. }) if what == "fc.weight"
        ));
        assert!(int4.with_bits(2).with_reduce_range().check("w").is_err());
        // A scheme the check refuses still has bounds (no shift out of range).
        assert_eq!(int4.with_bits(0).bounds(), (-2, 1));
    }

    #[test]
    fn two_bit_symmetric_qparams_by_hand() {
        // qint8 with quant_min -2, quant_max 1, per_tensor_symmetric on [-1, 3]:
        // scale = 3 / ((1 - (-2)) / 2) = 2, zero point 0.
        let p = QScheme::new(QType::Int4, Mode::Symmetric)
            .with_bits(2)
            .qparams(
                &[Range {
                    min: -1.0,
                    max: 3.0,
                }],
                "x",
            )
            .unwrap();
        assert_eq!(p.scale, vec![2.0]);
        assert_eq!(p.zero_point, vec![0]);
        assert_eq!(quantize_value(3.0, 2.0, 0, (-2, 1)), 1);
        assert_eq!(quantize_value(-5.0, 2.0, 0, (-2, 1)), -2);
    }

    #[test]
    fn qparams_match_pytorch_by_hand() {
        let r = Range {
            min: -1.0,
            max: 3.0,
        };
        // torch.ao.quantization.MinMaxObserver(dtype=torch.quint8) on [-1, 3]:
        // scale = 4 / 255, zero_point = 0 - round(-1 / scale) = round(63.75) = 64.
        let affine = QScheme::new(QType::UInt8, Mode::Affine)
            .qparams(&[r], "x")
            .unwrap();
        assert_eq!(affine.scale, vec![4.0 / 255.0]);
        assert_eq!(affine.zero_point, vec![64]);
        // qint8, per_tensor_symmetric: scale = 3 / 127.5, zero_point 0.
        let sym = QScheme::new(QType::Int8, Mode::Symmetric)
            .qparams(&[r], "x")
            .unwrap();
        assert_eq!(sym.scale, vec![3.0 / 127.5]);
        assert_eq!(sym.zero_point, vec![0]);
        // quint8 symmetric puts zero in the middle.
        let usym = QScheme::new(QType::UInt8, Mode::Symmetric)
            .qparams(&[r], "x")
            .unwrap();
        assert_eq!(usym.zero_point, vec![128]);
    }

    #[test]
    fn a_zero_range_is_an_error_alone_and_exact_among_channels() {
        let zero = Range { min: 0.0, max: 0.0 };
        let scheme = QScheme::new(QType::Int8, Mode::Affine);
        assert!(matches!(
            scheme.qparams(&[zero], "fc.weight"),
            Err(Error::ZeroRange { what }) if what == "fc.weight"
        ));
        let p = scheme
            .qparams(
                &[
                    zero,
                    Range {
                        min: -1.0,
                        max: 1.0,
                    },
                ],
                "w",
            )
            .unwrap();
        assert_eq!(p.scale[0], 1.0);
        // A constant other than zero has a range: [0, 5] for 5.
        assert!(scheme.qparams(&[Range { min: 5.0, max: 5.0 }], "c").is_ok());
    }

    #[test]
    fn layouts_index_channels_and_groups() {
        // Shape [2, 5]: per channel on axis 1 gives 5 sets, column by column.
        let shape = [2, 5];
        let s = QScheme::new(QType::Int8, Mode::Symmetric);
        let per_col = s.per_channel(1).layout(&shape, "w").unwrap();
        assert_eq!(per_col.count(), 5);
        assert_eq!(
            (0..10).map(|i| per_col.index(i)).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
        );
        // Groups of 2 along axis 1: [0, 0, 1, 1, 2] per row, rows separate.
        let groups = s.per_group(1, 2).layout(&shape, "w").unwrap();
        assert_eq!(groups.count(), 6);
        assert_eq!(
            (0..10).map(|i| groups.index(i)).collect::<Vec<_>>(),
            vec![0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
        );
        // Groups of 2 along axis 0 of [4, 3]: each column split in two halves.
        let down = s.per_group(0, 2).layout(&[4, 3], "w").unwrap();
        assert_eq!(down.count(), 6);
        assert_eq!(
            (0..12).map(|i| down.index(i)).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]
        );
        // A convolution [2, 3, 2, 2] in groups of 5 over in x kh x kw: each filter's 12 values
        // in order, 3 groups of 5, 5 and 2.
        let conv = s.per_flat_group(1, 5).layout(&[2, 3, 2, 2], "w").unwrap();
        assert_eq!(conv.count(), 6);
        assert_eq!(
            (0..24).map(|i| conv.index(i)).collect::<Vec<_>>(),
            [
                [0; 5].as_slice(),
                &[1; 5],
                &[2; 2],
                &[3; 5],
                &[4; 5],
                &[5; 2]
            ]
            .concat()
        );
        assert!(s.per_flat_group(4, 5).layout(&[2, 3, 2, 2], "w").is_err());
        // A channel axis over 255, which burn's block quantization cannot express.
        assert_eq!(
            s.per_channel(0).layout(&[300, 2], "w").unwrap().count(),
            300
        );
        assert!(matches!(
            s.per_channel(2).layout(&shape, "w"),
            Err(Error::Scheme { .. })
        ));
    }
}
