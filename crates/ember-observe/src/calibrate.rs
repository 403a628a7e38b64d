//! The calibration loop: run batches of a dataset through a model whose layers feed their
//! observers, with a progress bar.

use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use ember_tensor::train::ordered_batches;
use ember_tensor::{Input, LabeledData};

use crate::{Error, Result};

/// How much data calibration sees.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Batches to run (from the start of the data, in order); `None` runs them all.
    pub max_batches: Option<usize>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

impl Default for CalibrationConfig {
    /// 32 batches of 64 images, PyTorch's tutorial's order of magnitude (2048 images).
    fn default() -> Self {
        Self {
            batch_size: 64,
            max_batches: Some(32),
            progress: false,
        }
    }
}

/// Run the first batches of `data` through `forward` (a model whose layers observe their
/// inputs) and return how many samples it saw. No data, a zero batch size or zero batches is
/// an error: a range calibrated on nothing would be made up.
pub fn calibrate<I: Input>(
    data: &(impl LabeledData<I> + ?Sized),
    config: &CalibrationConfig,
    device: &Device,
    mut forward: impl FnMut(I),
) -> Result<usize> {
    if config.batch_size == 0 {
        return Err(Error::InvalidConfig {
            field: "batch_size",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let batches: Vec<Vec<usize>> = ordered_batches(data.len(), config.batch_size)
        .into_iter()
        .take(config.max_batches.unwrap_or(usize::MAX))
        .collect();
    if batches.is_empty() {
        return Err(Error::Empty {
            what: format!(
                "calibration set ({} samples, {:?} batches)",
                data.len(),
                config.max_batches
            ),
        });
    }
    let bar = if config.progress {
        let bar = ProgressBar::new(batches.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} batches")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut seen = 0;
    for indices in &batches {
        let (inputs, _) = data.batch(indices, device);
        forward(inputs);
        seen += indices.len();
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ember_tensor::testing::Blobs;

    #[test]
    fn calibration_runs_the_first_batches_in_order() {
        let device = Device::flex();
        let data = Blobs::new(10, 3, 1);
        let config = CalibrationConfig {
            batch_size: 4,
            max_batches: Some(2),
            progress: false,
        };
        let mut sizes = Vec::new();
        let seen = calibrate(&data, &config, &device, |images| {
            sizes.push(images.dims()[0])
        })
        .unwrap();
        assert_eq!((seen, sizes), (8, vec![4, 4]));
        let all = CalibrationConfig {
            max_batches: None,
            ..config
        };
        assert_eq!(calibrate(&data, &all, &device, |_| {}).unwrap(), 10);
    }

    #[test]
    fn nothing_to_calibrate_on_is_an_error() {
        let device = Device::flex();
        let config = CalibrationConfig::default();
        let empty = Blobs::new(0, 3, 1);
        assert!(matches!(
            calibrate(&empty, &config, &device, |_| {}),
            Err(Error::Empty { .. })
        ));
        let zero_batches = CalibrationConfig {
            max_batches: Some(0),
            ..config
        };
        let data = Blobs::new(4, 3, 1);
        assert!(matches!(
            calibrate(&data, &zero_batches, &device, |_| {}),
            Err(Error::Empty { .. })
        ));
        let zero_size = CalibrationConfig {
            batch_size: 0,
            ..config
        };
        assert!(matches!(
            calibrate(&data, &zero_size, &device, |_| {}),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
