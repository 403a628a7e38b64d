//! Calibration statistics for quantization: the observers that choose each quantizer's
//! clipping range, and the loop that feeds them.
//!
//! - [`ObserverConfig`] / [`Observer`]: min/max, moving-average min/max, and a histogram of
//!   2048 bins whose range is chosen by percentile, by least squared error or by least KL
//!   divergence (TensorRT's entropy calibration); each per tensor or per channel along any
//!   axis. Min/max and histogram observers [`Observer::merge`] exactly: merging observers of
//!   two halves of the data equals one observer of all of it.
//! - [`calibrate`]: runs batches through a model whose layers hold observers.
//!
//! Observers return ranges, not scales: the quantization scheme (ember-quant) turns a range
//! into a scale and zero point.
//!
//! ```
//! use ember_observe::{ObserverConfig, RangeMethod};
//!
//! let mut observer = ObserverConfig::histogram(RangeMethod::Percentile(99.0)).build("x")?;
//! let values: Vec<f32> = (0..1000).map(|i| i as f32).collect();
//! observer.observe(&values, &[1000])?;
//! let range = observer.ranges(256)?[0];
//! assert!(range.max < 999.0 && range.max > 980.0);
//! # Ok::<(), ember_observe::Error>(())
//! ```

mod calibrate;
mod error;
pub mod histogram;
mod observer;

pub use calibrate::{CalibrationConfig, calibrate};
pub use error::{Error, Result};
pub use histogram::{Histogram, RangeMethod};
pub use observer::{Observer, ObserverConfig, ObserverKind, Range};
