//! A histogram of observed values on a grid anchored at zero, with bins of a power-of-two
//! width, and the three ways of choosing a clipping range from it.
//!
//! Anchoring makes merging exact. Bin `j` at width `2^k` covers `[j·2^k, (j+1)·2^k)`, so two
//! bins at width `2^k` fold into one at `2^(k+1)` (`j` becomes `floor(j / 2)`) without
//! splitting any count. The width is always the smallest power of two that fits the range
//! seen so far into [`Histogram::BINS`] bins, which depends on the data's minimum and maximum
//! alone: observing batches one by one, in any order, or merging histograms of parts gives
//! the same histogram, bin for bin. (PyTorch's `HistogramObserver` re-bins by interpolation
//! when the range grows, so its result depends on the batch order.)

use serde::Serialize;

use crate::{Error, Range, Result};

/// Counts of values on a zero-anchored grid of at most [`Histogram::BINS`] bins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bins are `2^log2_width` wide.
    log2_width: i32,
    /// Grid index of `counts[0]`.
    first: i64,
    counts: Vec<u64>,
    min: f32,
    max: f32,
}

/// How a histogram's clipping range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum RangeMethod {
    /// Clip both tails at a percentile: `Percentile(99.99)` keeps the values between the
    /// 0.01th and the 99.99th percentile.
    Percentile(f64),
    /// The range that minimizes the expected squared error of quantizing the histogram:
    /// rounding error inside the range plus clipping error outside it.
    Mse,
    /// The threshold that minimizes the KL divergence between the distribution of the values
    /// and of their quantized version (TensorRT's calibration, Migacz 2017).
    Entropy,
}

impl Histogram {
    /// The most bins a histogram holds, as in PyTorch's `HistogramObserver` and TensorRT.
    pub const BINS: usize = 2048;

    /// The finest bin width, `2^-40` (or 2^-50 of the largest magnitude seen, if coarser): a
    /// constant tensor gets one bin of this width.
    const MIN_LOG2_WIDTH: i32 = -40;

    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            log2_width: Self::MIN_LOG2_WIDTH,
            first: 0,
            counts: Vec::new(),
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    /// Values seen.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The smallest and largest value seen, if any.
    pub fn seen(&self) -> Option<Range> {
        (!self.counts.is_empty()).then_some(Range {
            min: self.min,
            max: self.max,
        })
    }

    /// Width of a bin.
    pub fn bin_width(&self) -> f64 {
        2f64.powi(self.log2_width)
    }

    /// The counts, and the value where the first bin starts.
    pub fn bins(&self) -> (&[u64], f64) {
        (&self.counts, self.first as f64 * self.bin_width())
    }

    /// Add finite values (the caller checks finiteness).
    pub fn add(&mut self, values: &[f32]) {
        let Some((lo, hi)) = min_max(values) else {
            return;
        };
        let (min, max) = (self.min.min(lo), self.max.max(hi));
        self.fit(min, max);
        for &v in values {
            let j = index(v, self.log2_width);
            self.counts[(j - self.first) as usize] += 1;
        }
    }

    /// Fold `other`'s counts into this histogram: the result equals one histogram over both
    /// sets of values.
    pub fn merge(&mut self, other: &Histogram) {
        let Some(seen) = other.seen() else { return };
        let (min, max) = (self.min.min(seen.min), self.max.max(seen.max));
        self.fit(min, max);
        let mut other = other.clone();
        other.coarsen_to(self.log2_width);
        for (i, &c) in other.counts.iter().enumerate() {
            self.counts[(other.first + i as i64 - self.first) as usize] += c;
        }
    }

    /// Grow and coarsen the grid so that it covers `[min, max]` in at most `BINS` bins at the
    /// smallest width that allows it.
    fn fit(&mut self, min: f32, max: f32) {
        // Grid indices stay below 2^51, exact in f64 and far from i64's limits.
        let magnitude = (min as f64).abs().max((max as f64).abs());
        let mut k = self.log2_width;
        if magnitude > 0.0 {
            k = k.max(magnitude.log2().floor() as i32 - 50);
        }
        if self.counts.is_empty() {
            // Start from the smallest width that can fit, then step up to the exact one.
            let span = (max as f64 - min as f64) / Self::BINS as f64;
            if span > 0.0 {
                k = k.max(span.log2().floor() as i32 - 1);
            }
        }
        while index(max, k) - index(min, k) + 1 > Self::BINS as i64 {
            k += 1;
        }
        if self.counts.is_empty() {
            self.log2_width = k;
            self.first = index(min, k);
            self.counts = vec![0; (index(max, k) - self.first + 1) as usize];
        } else {
            self.coarsen_to(k);
            let first = index(min, k);
            let last = index(max, k);
            let mut counts = vec![0; (last - first + 1) as usize];
            for (i, &c) in self.counts.iter().enumerate() {
                counts[(self.first + i as i64 - first) as usize] += c;
            }
            self.first = first;
            self.counts = counts;
        }
        self.min = min;
        self.max = max;
    }

    /// Fold bins pairwise until they are `2^k` wide.
    fn coarsen_to(&mut self, k: i32) {
        while self.log2_width < k {
            let first = self.first.div_euclid(2);
            let last = (self.first + self.counts.len() as i64 - 1).div_euclid(2);
            let mut counts = vec![0; (last - first + 1) as usize];
            for (i, &c) in self.counts.iter().enumerate() {
                counts[((self.first + i as i64).div_euclid(2) - first) as usize] += c;
            }
            self.first = first;
            self.counts = counts;
            self.log2_width += 1;
        }
    }

    /// The clipping range chosen by `method` for a quantizer of `levels` levels (256 for
    /// 8 bits). The range never extends past the values seen.
    pub fn range(&self, method: RangeMethod, levels: u32) -> Result<Range> {
        let seen = self.seen().ok_or_else(|| Error::Empty {
            what: "histogram".into(),
        })?;
        if levels < 2 {
            return Err(Error::InvalidConfig {
                field: "levels",
                value: levels.to_string(),
                reason: "a quantizer needs at least 2 levels",
            });
        }
        let chosen = match method {
            RangeMethod::Percentile(p) => self.percentile_range(p)?,
            RangeMethod::Mse => self.mse_range(levels),
            RangeMethod::Entropy => self.entropy_range(levels),
        };
        Ok(Range {
            min: chosen.min.max(seen.min),
            max: chosen.max.min(seen.max),
        })
    }

    fn edge(&self, bin: usize) -> f32 {
        ((self.first + bin as i64) as f64 * self.bin_width()) as f32
    }

    fn percentile_range(&self, p: f64) -> Result<Range> {
        if !(50.0..=100.0).contains(&p) {
            return Err(Error::InvalidConfig {
                field: "percentile",
                value: p.to_string(),
                reason: "must be in [50, 100]",
            });
        }
        let fraction = (100.0 - p) / 100.0;
        Ok(Range {
            min: self.tail_edge(fraction, false),
            max: self.tail_edge(fraction, true),
        })
    }

    /// The edge that cuts off `fraction` of the values at the top (`upper`) or bottom: the
    /// lower edge of the first bin whose cumulative count passes the tail, or the upper edge
    /// of the last one.
    fn tail_edge(&self, fraction: f64, upper: bool) -> f32 {
        let tail = self.total() as f64 * fraction;
        let mut seen = 0.0;
        let bins: Box<dyn Iterator<Item = (usize, &u64)>> = if upper {
            Box::new(self.counts.iter().enumerate().rev())
        } else {
            Box::new(self.counts.iter().enumerate())
        };
        for (i, &c) in bins {
            seen += c as f64;
            if seen > tail {
                return if upper {
                    self.edge(i + 1)
                } else {
                    self.edge(i)
                };
            }
        }
        if upper {
            self.edge(self.counts.len())
        } else {
            self.edge(0)
        }
    }

    /// Expected squared quantization error of the histogram for the range `[lo, hi]` (which
    /// contains 0, as every quantizer's range does), each bin's values taken at its center.
    fn mse(&self, lo: f64, hi: f64, levels: u32) -> f64 {
        let step = (hi - lo) / (levels - 1) as f64;
        let w = self.bin_width();
        let rounding = step * step / 12.0;
        self.counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| {
                let center = ((self.first + i as i64) as f64 + 0.5) * w;
                let err = if center < lo {
                    (lo - center).powi(2)
                } else if center > hi {
                    (center - hi).powi(2)
                } else {
                    rounding
                };
                c as f64 * err
            })
            .sum()
    }

    fn mse_range(&self, levels: u32) -> Range {
        // Each end independently cuts off a tail of 0 or 10^-7 .. 0.2 of the values, in 40
        // log-spaced steps; the pair with the least expected error wins (both contain zero).
        let tails: Vec<f64> = std::iter::once(0.0)
            .chain((0..40).map(|i| 1e-7 * (0.2f64 / 1e-7).powf(i as f64 / 39.0)))
            .collect();
        let los: Vec<f64> = tails
            .iter()
            .map(|&t| (self.tail_edge(t, false) as f64).min(0.0))
            .collect();
        let his: Vec<f64> = tails
            .iter()
            .map(|&t| (self.tail_edge(t, true) as f64).max(0.0))
            .collect();
        let mut best = (f64::INFINITY, los[0], his[0]);
        for &lo in &los {
            for &hi in &his {
                if hi > lo {
                    let err = self.mse(lo, hi, levels);
                    if err < best.0 {
                        best = (err, lo, hi);
                    }
                }
            }
        }
        Range {
            min: best.1 as f32,
            max: best.2 as f32,
        }
    }

    /// Counts of `|x|` from zero, at the finest width that fits `BINS` bins.
    fn magnitudes(&self) -> (Vec<u64>, f64) {
        let mut folded = Histogram {
            log2_width: self.log2_width,
            first: 0,
            counts: Vec::new(),
            min: 0.0,
            max: self.min.abs().max(self.max.abs()),
        };
        // Bin j < 0 covers [j·w, (j+1)·w): its magnitudes fall in bin -j-1 of the folded grid.
        let top = (self.first.abs() + self.counts.len() as i64).max(1);
        let mut k = self.log2_width;
        while top >> (k - self.log2_width) > Self::BINS as i64 {
            k += 1;
        }
        folded.counts = vec![0; Self::BINS];
        for (i, &c) in self.counts.iter().enumerate() {
            let j = self.first + i as i64;
            let m = if j < 0 { -j - 1 } else { j };
            let m = (m >> (k - self.log2_width)) as usize;
            folded.counts[m.min(Self::BINS - 1)] += c;
        }
        let last = folded.counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        folded.counts.truncate(last + 1);
        (folded.counts, 2f64.powi(k))
    }

    /// TensorRT's threshold search, one-sided: levels run from the lower end of the range
    /// (zero for non-negative data such as ReLU outputs, else the minimum, as in an affine
    /// scheme) up to the threshold, which KL chooses. TensorRT's symmetric variant searches
    /// `|x|`; on a normalized image, whose background is one large spike at the minimum, it
    /// cuts the range at the background's magnitude and clips every stroke.
    fn entropy_range(&self, levels: u32) -> Range {
        let (mut hist, width, start) = if self.min >= 0.0 {
            let (hist, width) = self.magnitudes();
            (hist, width, 0.0)
        } else {
            (self.counts.clone(), self.bin_width(), self.edge(0) as f64)
        };
        // The first bin holds the spike at the lower end (ReLU zeros, image background): often
        // most of the values, which no quantized distribution matches unless the threshold
        // shrinks until each level is one bin. NVIDIA's pytorch-quantization flattens it the
        // same way (`bins[0] = bins[1]` in its entropy calibrator).
        if hist.len() > 1 {
            hist[0] = hist[1];
        }
        let target = levels as usize;
        let threshold_bins = if hist.len() <= target {
            hist.len()
        } else {
            (target..=hist.len())
                .map(|i| (kl_of_quantizing(&hist, i, target), i))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or(hist.len(), |(_, i)| i)
        };
        Range {
            min: if self.min >= 0.0 { 0.0 } else { self.min },
            max: (start + threshold_bins as f64 * width) as f32,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// KL(P || Q), where P is the first `i` bins of `hist` with the rest folded into the last one,
/// and Q is P quantized to `target` levels: each level's total spread evenly over the bins it
/// covers that are non-empty (TensorRT's reference algorithm).
fn kl_of_quantizing(hist: &[u64], i: usize, target: usize) -> f64 {
    let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
    p[i - 1] += hist[i..].iter().map(|&c| c as f64).sum::<f64>();
    let mut q = vec![0.0; i];
    for level in 0..target {
        let start = level * i / target;
        let end = ((level + 1) * i / target).max(start + 1).min(i);
        let total: f64 = hist[start..end].iter().map(|&c| c as f64).sum();
        let nonzero = hist[start..end].iter().filter(|&&c| c > 0).count();
        if nonzero > 0 {
            for j in start..end {
                if hist[j] > 0 {
                    q[j] = total / nonzero as f64;
                }
            }
        }
    }
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(&q)
        .filter(|&(&pi, _)| pi > 0.0)
        .map(|(&pi, &qi)| {
            let (pi, qi) = (pi / sp, qi / sq);
            // A bin that P fills and Q leaves empty (the folded outliers) gets a tiny mass
            // instead of an infinite divergence.
            pi * (pi / qi.max(1e-12)).ln()
        })
        .sum()
}

/// Grid index of `v` at width `2^k`: exact, since scaling by a power of two is.
fn index(v: f32, k: i32) -> i64 {
    (v as f64 * 2f64.powi(-k)).floor() as i64
}

fn min_max(values: &[f32]) -> Option<(f32, f32)> {
    values.iter().fold(None, |acc, &v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bins_count_every_value_at_the_finest_width_that_fits() {
        let mut h = Histogram::new();
        h.add(&[0.0, 0.5, 1.0, -1.0]);
        assert_eq!(h.total(), 4);
        // [-1, 1] in at most 2048 bins: 2^-10 gives 2049 bins, 2^-9 gives 1025.
        assert_eq!(h.bin_width(), 2f64.powi(-9));
        let (counts, start) = h.bins();
        assert_eq!(start, -1.0);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[512], 1);
        assert_eq!(counts[768], 1);
        assert_eq!(counts[1024], 1);
    }

    #[test]
    fn a_wider_batch_coarsens_without_losing_counts() {
        let mut h = Histogram::new();
        h.add(&[0.1, 0.2]);
        h.add(&[100.0]);
        assert_eq!(h.total(), 3);
        assert!(h.counts.len() <= Histogram::BINS);
        let mut once = Histogram::new();
        once.add(&[0.1, 0.2, 100.0]);
        assert_eq!(h, once);
    }

    #[test]
    fn percentile_cuts_the_outliers() {
        let mut h = Histogram::new();
        let mut values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(1000.0);
        h.add(&values);
        let r = h.range(RangeMethod::Percentile(99.9), 256).unwrap();
        assert!(r.max < 2.0, "{r:?}");
        assert_eq!(r.min, 0.0);
        let all = h.range(RangeMethod::Percentile(100.0), 256).unwrap();
        assert_eq!(all.max, 1000.0);
    }

    #[test]
    fn mse_and_entropy_clip_a_long_tail_and_keep_a_uniform_range() {
        // Uniform on [0, 1]: nothing to clip.
        let uniform: Vec<f32> = (0..20_000).map(|i| i as f32 / 20_000.0).collect();
        let mut h = Histogram::new();
        h.add(&uniform);
        for method in [RangeMethod::Mse, RangeMethod::Entropy] {
            let r = h.range(method, 256).unwrap();
            assert!(r.max > 0.95, "{method:?}: {r:?}");
        }
        // 20001 values in [-1, 1] and one at 50. Entropy clips the outlier at 8 bits. For the
        // squared error, keeping it costs rounding error on every value (a step of 51 / 255:
        // 20001 · 0.2² / 12 ≈ 67) and clipping it costs 49² ≈ 2401 once, so at 8 bits it
        // stays; at 4 bits (a step of 3.4: 20001 · 3.4² / 12 ≈ 19 000) it goes.
        let mut tail: Vec<f32> = (0..=20_000).map(|i| (i as f32 / 10_000.0) - 1.0).collect();
        tail.push(50.0);
        let mut h = Histogram::new();
        h.add(&tail);
        // The threshold keeps the body (up to 1, within a bin of 2^-5) and clips the outlier;
        // the search itself is checked by hand in `kl_of_quantizing_matches_hand_computed_cases`.
        let entropy = h.range(RangeMethod::Entropy, 256).unwrap();
        assert!(
            entropy.max < 50.0 && entropy.max >= 1.0 - 0.04,
            "{entropy:?}"
        );
        assert_eq!(entropy.min, -1.0);
        assert_eq!(h.range(RangeMethod::Mse, 256).unwrap().max, 50.0);
        let mse4 = h.range(RangeMethod::Mse, 16).unwrap();
        assert!(mse4.max < 2.0 && mse4.max >= 0.9, "{mse4:?}");
    }

    #[test]
    fn kl_of_quantizing_matches_hand_computed_cases() {
        // Bins [4, 4, 4, 4, 0, 0, 0, 1] quantized to 4 levels.
        let hist = [4u64, 4, 4, 4, 0, 0, 0, 1];
        // All 8 bins, 2 per level: every level's non-empty bins share its total equally, which
        // gives back P itself ([4, 4] [4, 4] [0, 0] [0, 1]): no divergence.
        assert!(kl_of_quantizing(&hist, 8, 4).abs() < 1e-12);
        // The first 4 bins, the outlier folded into the last: P = [4, 4, 4, 5] / 17 against
        // Q = [4, 4, 4, 4] / 16.
        let (p, q) = ([4.0f64, 4.0, 4.0, 5.0].map(|c| c / 17.0), 0.25f64);
        let expected: f64 = p.iter().map(|&p| p * (p / q).ln()).sum();
        assert!((kl_of_quantizing(&hist, 4, 4) - expected).abs() < 1e-12);
        assert!(expected > 0.0);
        // 5 bins: the last level covers bins 3 and 4, and bin 4 is empty in the histogram, so
        // Q leaves it empty while P holds the folded outlier there: a far larger divergence.
        assert!(kl_of_quantizing(&hist, 5, 4) > 100.0 * expected);
    }

    #[test]
    fn bad_ranges_are_typed_errors() {
        assert!(matches!(
            Histogram::new().range(RangeMethod::Mse, 256),
            Err(Error::Empty { .. })
        ));
        let mut h = Histogram::new();
        h.add(&[1.0, 2.0]);
        assert!(matches!(
            h.range(RangeMethod::Percentile(101.0), 256),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn a_constant_tensor_gets_one_fine_bin() {
        let mut h = Histogram::new();
        h.add(&[3.0; 10]);
        assert_eq!(h.counts, vec![10]);
        assert_eq!(h.seen(), Some(Range { min: 3.0, max: 3.0 }));
    }
}
