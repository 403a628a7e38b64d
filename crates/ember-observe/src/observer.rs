//! Observers: the statistics that calibration gathers, per tensor or per channel, and the
//! clipping ranges they choose.

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, RangeMethod};
use crate::{Error, Result};

/// A clipping range `[min, max]` for a quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Smallest value to represent.
    pub min: f32,
    /// Largest value to represent.
    pub max: f32,
}

/// Which statistic an observer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ObserverKind {
    /// The smallest and largest value seen (PyTorch's `MinMaxObserver`).
    MinMax,
    /// An exponential moving average of each batch's min and max:
    /// `m ← m + momentum · (batch − m)` (PyTorch's `MovingAverageMinMaxObserver`, momentum
    /// 0.01).
    MovingAverage {
        /// Weight of the newest batch, in (0, 1].
        momentum: f32,
    },
    /// A histogram of [`Histogram::BINS`] bins, with the range chosen by `method`.
    Histogram {
        /// How the range is chosen.
        method: RangeMethod,
    },
}

/// What an observer watches and how.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObserverConfig {
    /// The statistic.
    pub kind: ObserverKind,
    /// `Some(axis)` keeps one statistic per index along `axis` (per output channel, say);
    /// `None` one for the whole tensor.
    pub per_channel: Option<usize>,
}

impl ObserverConfig {
    /// Min/max over the whole tensor.
    pub fn min_max() -> Self {
        Self::new(ObserverKind::MinMax)
    }

    /// Moving-average min/max with PyTorch's default momentum, 0.01.
    pub fn moving_average() -> Self {
        Self::new(ObserverKind::MovingAverage { momentum: 0.01 })
    }

    /// A histogram whose range is chosen by `method`.
    pub fn histogram(method: RangeMethod) -> Self {
        Self::new(ObserverKind::Histogram { method })
    }

    /// `kind` over the whole tensor.
    pub fn new(kind: ObserverKind) -> Self {
        Self {
            kind,
            per_channel: None,
        }
    }

    /// One statistic per index along `axis`.
    pub fn per_channel(mut self, axis: usize) -> Self {
        self.per_channel = Some(axis);
        self
    }

    /// A fresh observer for values named `what` (in error messages).
    pub fn build(&self, what: impl Into<String>) -> Result<Observer> {
        if let ObserverKind::MovingAverage { momentum } = self.kind
            && !(momentum > 0.0 && momentum <= 1.0)
        {
            return Err(Error::InvalidConfig {
                field: "momentum",
                value: momentum.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        Ok(Observer {
            config: *self,
            what: what.into(),
            channels: Vec::new(),
            batches: 0,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Statistic {
    MinMax(Range),
    Histogram(Box<Histogram>),
}

/// Statistics of the values it has seen; see [`ObserverConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Observer {
    config: ObserverConfig,
    what: String,
    channels: Vec<Statistic>,
    batches: usize,
}

impl Observer {
    /// The config it was built from.
    pub fn config(&self) -> &ObserverConfig {
        &self.config
    }

    /// What it watches.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Batches observed.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// The histogram of each channel, for a histogram observer (empty otherwise).
    pub fn histograms(&self) -> Vec<&Histogram> {
        self.channels
            .iter()
            .filter_map(|stat| match stat {
                Statistic::Histogram(h) => Some(h.as_ref()),
                Statistic::MinMax(_) => None,
            })
            .collect()
    }

    /// Observe one batch of values, flattened in row-major order from `shape`. NaN or Inf is
    /// an error and leaves the observer as it was.
    pub fn observe(&mut self, values: &[f32], shape: &[usize]) -> Result<()> {
        if shape.iter().product::<usize>() != values.len() {
            return Err(self.shape_error(format!(
                "{} values do not fill shape {shape:?}",
                values.len()
            )));
        }
        if let Some(first) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: self.what.clone(),
                count: values.iter().filter(|v| !v.is_finite()).count(),
                first: *first,
            });
        }
        if values.is_empty() {
            return Ok(());
        }
        let split = self.split(values, shape)?;
        if self.channels.is_empty() {
            self.channels = split.iter().map(|_| self.fresh()).collect();
        }
        if split.len() != self.channels.len() {
            return Err(self.shape_error(format!(
                "{} channels, the observer has seen {}",
                split.len(),
                self.channels.len()
            )));
        }
        let first_batch = self.batches == 0;
        for (stat, part) in self.channels.iter_mut().zip(&split) {
            update(stat, part, self.config.kind, first_batch);
        }
        self.batches += 1;
        Ok(())
    }

    /// Fold `other` into this observer, so that it equals one observer over both observers'
    /// data. Min/max and histograms merge exactly; a moving average depends on the order of
    /// its batches and cannot.
    pub fn merge(&mut self, other: &Observer) -> Result<()> {
        if self.config != other.config {
            return Err(Error::Merge {
                reason: format!("configs differ: {:?} and {:?}", self.config, other.config),
            });
        }
        if let ObserverKind::MovingAverage { .. } = self.config.kind {
            return Err(Error::Merge {
                reason: "a moving average depends on batch order: observe the batches in one \
                         observer"
                    .into(),
            });
        }
        if other.channels.is_empty() {
            return Ok(());
        }
        if self.channels.is_empty() {
            self.channels = other.channels.clone();
        } else if self.channels.len() != other.channels.len() {
            return Err(Error::Merge {
                reason: format!(
                    "{} channels against {}",
                    self.channels.len(),
                    other.channels.len()
                ),
            });
        } else {
            for (mine, theirs) in self.channels.iter_mut().zip(&other.channels) {
                match (mine, theirs) {
                    (Statistic::MinMax(a), Statistic::MinMax(b)) => {
                        a.min = a.min.min(b.min);
                        a.max = a.max.max(b.max);
                    }
                    (Statistic::Histogram(a), Statistic::Histogram(b)) => a.merge(b),
                    _ => unreachable!("one config gives one statistic"),
                }
            }
        }
        self.batches += other.batches;
        Ok(())
    }

    /// The clipping range per channel (one for a per-tensor observer), for a quantizer of
    /// `levels` levels (the histogram methods weigh clipping against rounding with it).
    pub fn ranges(&self, levels: u32) -> Result<Vec<Range>> {
        if self.channels.is_empty() {
            return Err(Error::Empty {
                what: self.what.clone(),
            });
        }
        self.channels
            .iter()
            .map(|stat| match (stat, self.config.kind) {
                (Statistic::MinMax(r), _) => Ok(*r),
                (Statistic::Histogram(h), ObserverKind::Histogram { method }) => {
                    h.range(method, levels)
                }
                (Statistic::Histogram(_), _) => unreachable!("one config gives one statistic"),
            })
            .collect()
    }

    fn fresh(&self) -> Statistic {
        match self.config.kind {
            ObserverKind::MinMax | ObserverKind::MovingAverage { .. } => Statistic::MinMax(Range {
                min: f32::INFINITY,
                max: f32::NEG_INFINITY,
            }),
            ObserverKind::Histogram { .. } => Statistic::Histogram(Box::default()),
        }
    }

    /// The values of each channel, or all of them as one.
    fn split(&self, values: &[f32], shape: &[usize]) -> Result<Vec<Vec<f32>>> {
        let Some(axis) = self.config.per_channel else {
            return Ok(vec![values.to_vec()]);
        };
        if axis >= shape.len() {
            return Err(self.shape_error(format!(
                "channel axis {axis} is out of range for shape {shape:?}"
            )));
        }
        let channels = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let mut split = vec![Vec::with_capacity(values.len() / channels); channels];
        for (i, &v) in values.iter().enumerate() {
            split[(i / inner) % channels].push(v);
        }
        Ok(split)
    }

    fn shape_error(&self, reason: String) -> Error {
        Error::Shape {
            what: self.what.clone(),
            reason,
        }
    }
}

fn update(stat: &mut Statistic, values: &[f32], kind: ObserverKind, first_batch: bool) {
    match stat {
        Statistic::Histogram(h) => h.add(values),
        Statistic::MinMax(range) => {
            let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            match kind {
                ObserverKind::MovingAverage { momentum } if !first_batch => {
                    range.min += momentum * (lo - range.min);
                    range.max += momentum * (hi - range.max);
                }
                _ => {
                    range.min = range.min.min(lo);
                    range.max = range.max.max(hi);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn min_max_per_tensor_and_per_channel() {
        let mut whole = ObserverConfig::min_max().build("x").unwrap();
        let mut rows = ObserverConfig::min_max().per_channel(0).build("x").unwrap();
        let mut cols = ObserverConfig::min_max().per_channel(1).build("x").unwrap();
        // [[1, -2, 3], [4, 5, -6]]
        let values = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        for o in [&mut whole, &mut rows, &mut cols] {
            o.observe(&values, &[2, 3]).unwrap();
        }
        let r = |min, max| Range { min, max };
        assert_eq!(whole.ranges(256).unwrap(), vec![r(-6.0, 5.0)]);
        assert_eq!(rows.ranges(256).unwrap(), vec![r(-2.0, 3.0), r(-6.0, 5.0)]);
        assert_eq!(
            cols.ranges(256).unwrap(),
            vec![r(1.0, 4.0), r(-2.0, 5.0), r(-6.0, 3.0)]
        );
    }

    #[test]
    fn moving_average_follows_the_published_update() {
        let mut o = ObserverConfig::new(ObserverKind::MovingAverage { momentum: 0.5 })
            .build("x")
            .unwrap();
        o.observe(&[0.0, 4.0], &[2]).unwrap();
        o.observe(&[-2.0, 2.0], &[2]).unwrap();
        // First batch sets [0, 4]; then min 0 + 0.5·(−2 − 0) = −1, max 4 + 0.5·(2 − 4) = 3.
        assert_eq!(
            o.ranges(256).unwrap(),
            vec![Range {
                min: -1.0,
                max: 3.0
            }]
        );
        assert!(matches!(o.clone().merge(&o), Err(Error::Merge { .. })));
    }

    #[test]
    fn bad_input_is_a_typed_error_and_changes_nothing() {
        let mut o = ObserverConfig::min_max().build("fc1 input").unwrap();
        assert!(matches!(o.ranges(256), Err(Error::Empty { .. })));
        o.observe(&[1.0, 2.0], &[2]).unwrap();
        let before = o.clone();
        let err = o
            .observe(&[1.0, f32::NAN, f32::INFINITY], &[3])
            .unwrap_err();
        assert!(matches!(err, Error::NonFinite { count: 2, ref what, .. } if what == "fc1 input"));
        assert!(err.to_string().contains("fc1 input"));
        assert_eq!(o, before);
        assert!(matches!(
            o.observe(&[1.0, 2.0], &[3]),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            ObserverConfig::min_max()
                .per_channel(2)
                .build("w")
                .unwrap()
                .observe(&[1.0], &[1]),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            ObserverConfig::new(ObserverKind::MovingAverage { momentum: 0.0 }).build("x"),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
