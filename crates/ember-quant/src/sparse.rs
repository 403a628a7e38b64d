//! Pruned layers on the sparse kernel. A drop-in [`crate::nn::Linear`] whose weight is mostly
//! zeros (behind an ember-prune mask, or zeros of its own) can hold it as compressed sparse
//! rows ([`ember_kernels::Csr`]) and, whenever its input is a plain f32 tensor on a host device
//! (flex, ndarray), multiply only the kept weights: unstructured pruning then makes the model
//! faster, not only smaller on disk. It lives beside the integer path because both are a
//! drop-in layer choosing its kernel at forward time.
//!
//! Elsewhere (wgpu, training) the layer computes as before, with its masked dense weight: the
//! same function up to float rounding. A layer that trains after the sparse form was attached
//! stops using it for good (the values would no longer be its weight); a weight changed
//! otherwise (loading another record) needs [`use_sparse_kernel`] again.
//!
//! Where the sparse kernel starts to win depends on the machine and on the layer's shape, not
//! only on its sparsity (the development machine's 784 x 300 layer at batch 256 crossed at
//! 50 %; other machines and small layers differ). So by default ([`SparseKernel::Auto`]) each
//! layer times both kernels on its own weight, on this machine, and keeps the faster, the way
//! cuDNN's benchmark mode picks a convolution algorithm. A timed choice can differ between two
//! runs where the kernels are within noise of each other (the outputs then differ by float
//! rounding); [`SparseKernel::Threshold`] decides by sparsity alone, the same on every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::module::linear;
use burn::tensor::{DType, Tensor, TensorData};
use ember_kernels::Csr;
use serde::{Deserialize, Serialize};

use crate::nn::{Path, QuantLayers};
use crate::{Error, Result};

/// The sparsity from which [`SparseKernel::Threshold`]`(SPARSE_CROSSOVER)` takes the sparse
/// kernel, and [`SparseKernel::Auto`] off the host, where nothing can be timed: a margin above
/// where `Csr::linear` overtakes flex's dense matmul on both cores of the development machine
/// (`cargo bench -p ember-benches --bench sparse`, batch 256: 1.15x at 50 %, 1.7x at 70 %,
/// 3.4x at 90 % on a 784 x 300 layer; the same on 1024 x 1024).
pub const SPARSE_CROSSOVER: f64 = 0.6;

/// The batch at which [`SparseKernel::Auto`] times the two kernels.
pub const AUTO_BATCH: usize = 256;

/// Below this sparsity a layer stays dense without being timed: the sparse kernel does the
/// dense product's work plus its indexing.
const UNTIMED_BELOW: f64 = 0.1;

/// Rounds of the two kernels taking turns; the median of each decides.
const TIMED_ROUNDS: usize = 7;

/// Which kernel a pruned layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum SparseKernel {
    /// Time both kernels on the layer's own weight at a batch of [`AUTO_BATCH`] and keep the
    /// faster (layers under 10 % zeros stay dense untimed); off the host, as
    /// `Threshold(SPARSE_CROSSOVER)`.
    #[default]
    Auto,
    /// As `Auto`, timed at this batch size (the one the model will serve).
    Timed {
        /// Rows of the timed input.
        batch: usize,
    },
    /// Sparse when the layer's weight is at least this fraction zeros, nothing timed: the
    /// same choice on every run and every machine.
    Threshold(f64),
    /// Sparse whatever the sparsity (for tests and measurements).
    Always,
    /// Dense: detach any sparse form.
    Never,
}

impl SparseKernel {
    /// The choice as given, or a typed error naming what is wrong with it.
    fn checked(self) -> Result<Self> {
        match self {
            Self::Threshold(t) if !(0.0..=1.0).contains(&t) => Err(Error::Scheme {
                what: "SparseKernel::Threshold".into(),
                reason: format!("{t} is not a sparsity in [0, 1]"),
            }),
            Self::Timed { batch: 0 } => Err(Error::Scheme {
                what: "SparseKernel::Timed".into(),
                reason: "a batch of 0 rows times nothing".into(),
            }),
            other => Ok(other),
        }
    }
}

/// The two kernels' median times on one layer, as [`SparseKernel::Auto`] measured them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KernelTimes {
    /// Rows of the timed input.
    pub batch: usize,
    /// burn's dense matmul with the masked weight, µs.
    pub dense_us: f64,
    /// The sparse kernel, µs.
    pub sparse_us: f64,
}

/// A layer's weight as compressed sparse rows of its transpose, its bias on the host.
#[derive(Debug, Clone)]
pub struct SparseWeights {
    csr: Arc<Csr>,
    bias: Option<Arc<Vec<f32>>>,
    /// Set once the layer has trained since; shared by every clone (see
    /// `crate::integer::IntegerWeights`).
    stale: Arc<AtomicBool>,
}

impl SparseWeights {
    /// From burn's `[d_input, d_output]` weight values and the bias.
    pub(crate) fn new(
        weight: &[f32],
        [inputs, outputs]: [usize; 2],
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        let csr = Csr::from_dense_transposed(inputs, outputs, weight)?;
        Ok(Self {
            csr: Arc::new(csr),
            bias: bias.map(Arc::new),
            stale: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The fraction of the weight that is zero.
    pub fn sparsity(&self) -> f64 {
        self.csr.sparsity()
    }

    pub(crate) fn mark_trained(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// `input · W + b` on the sparse kernel, or the input back for the dense path: an input
    /// on autodiff (training: the layer's weight is about to change, so the sparse form is
    /// dropped for good), on a device that is not the host, of another dtype or depth.
    pub(crate) fn linear<const D: usize>(&self, input: Tensor<D>) -> Path<D> {
        let device = input.device();
        if device.is_autodiff() {
            self.mark_trained();
        }
        let mut shape = input.dims();
        let accepts = !self.stale.load(Ordering::Relaxed)
            && input.dtype() == DType::F32
            && shape[D - 1] == self.csr.cols()
            && ember_tensor::device::is_host(&device);
        if !accepts {
            return Path::Float(input);
        }
        shape[D - 1] = self.csr.rows();
        Path::on_host(input, |x| {
            let rows = x.len() / self.csr.cols().max(1);
            let mut out = self.csr.linear(x, rows).ok()?;
            if let Some(bias) = &self.bias {
                for row in out.chunks_exact_mut(bias.len().max(1)) {
                    row.iter_mut().zip(bias.iter()).for_each(|(o, b)| *o += b);
                }
            }
            Some((out, shape))
        })
    }
}

/// What [`use_sparse_kernel`] did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparseLayer {
    /// The layer's path.
    pub path: String,
    /// What it decided.
    #[serde(flatten)]
    pub choice: SparseChoice,
}

/// What one layer decided about the sparse kernel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SparseChoice {
    /// The fraction of its weight that is zero (masks applied).
    pub sparsity: f64,
    /// Whether it now runs on the sparse kernel on host devices.
    pub sparse: bool,
    /// The timings that decided it, under [`SparseKernel::Auto`] and `Timed`.
    pub times: Option<KernelTimes>,
}

/// Give every fully connected drop-in layer of `model` a sparse form as `choice` says, from
/// its weight as it is now (masks applied). Convolutions and layers that quantize their input
/// (they have the integer path) stay as they are. A weight holding NaN or infinity, a
/// threshold outside [0, 1] and a timed batch of 0 rows are errors.
///
/// ```
/// use burn::tensor::Device;
/// use ember_prune::{PruneConfig, Scope, prune};
/// use ember_quant::{SPARSE_CROSSOVER, SparseKernel, use_sparse_kernel};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let config = MlpConfig { input: 64, hidden: vec![64], classes: 10, dropout: 0.0 };
/// let per_layer = PruneConfig::global_magnitude(0.9).with_scope(Scope::Layer);
/// let (mut model, _) = prune(config.init(&device)?, &per_layer)?;
/// // Timed on this machine: each layer keeps the faster kernel, and says how fast each was.
/// let layers = use_sparse_kernel(&mut model.clone(), SparseKernel::Auto)?;
/// for layer in &layers {
///     let times = layer.choice.times.expect("90 % zeros on the host: timed");
///     assert_eq!(layer.choice.sparse, times.sparse_us < times.dense_us);
/// }
/// // By sparsity alone, the same on every run: past 60 % zeros, both layers go sparse.
/// let layers = use_sparse_kernel(&mut model, SparseKernel::Threshold(SPARSE_CROSSOVER))?;
/// assert!(layers.iter().all(|l| l.choice.sparse && l.choice.times.is_none()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn use_sparse_kernel<M: QuantLayers>(
    model: &mut M,
    choice: SparseKernel,
) -> Result<Vec<SparseLayer>> {
    let choice = choice.checked()?;
    let mut report = vec![];
    for (path, layer) in model.quant_layers() {
        let decided = layer.set_sparse(choice).map_err(|e| match e {
            Error::NonFinite { count, first, .. } => Error::NonFinite {
                what: format!("{path}.weight"),
                count,
                first,
            },
            other => other,
        })?;
        if let Some(choice) = decided {
            report.push(SparseLayer { path, choice });
        }
    }
    Ok(report)
}

/// Decide whether a fully connected layer with this `weight` (burn's `[d_input, d_output]`,
/// its values `values`, `sparsity` of them zero) runs on `sparse`, as `choice` says: by
/// sparsity, or by timing both kernels on it.
pub(crate) fn choose(
    choice: SparseKernel,
    sparsity: f64,
    sparse: &SparseWeights,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Result<SparseChoice> {
    let decided = |sparse, times| SparseChoice {
        sparsity,
        sparse,
        times,
    };
    let host = ember_tensor::device::is_host(&weight.device());
    let batch = match choice {
        SparseKernel::Always => return Ok(decided(true, None)),
        SparseKernel::Never => return Ok(decided(false, None)),
        SparseKernel::Threshold(t) => return Ok(decided(sparsity >= t, None)),
        SparseKernel::Auto | SparseKernel::Timed { .. } if !host => {
            return Ok(decided(sparsity >= SPARSE_CROSSOVER, None));
        }
        _ if sparsity < UNTIMED_BELOW => return Ok(decided(false, None)),
        SparseKernel::Auto => AUTO_BATCH,
        SparseKernel::Timed { batch } => batch,
    };
    let times = time_kernels(sparse, weight, bias, batch)?;
    Ok(decided(times.sparse_us < times.dense_us, Some(times)))
}

/// Median times of the dense and the sparse product of one layer on a batch of `batch` rows,
/// the two taking turns.
fn time_kernels(
    sparse: &SparseWeights,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    batch: usize,
) -> Result<KernelTimes> {
    let device = weight.device();
    let [inputs, _] = weight.dims();
    // Non-negative, as after a ReLU; neither kernel's time depends on the values.
    let x: Vec<f32> = (0..batch * inputs)
        .map(|i| ((i * 37) % 251) as f32 / 251.0)
        .collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [batch, inputs]), &device);
    let mut failed = None;
    let mut dense = || {
        let out = linear(x.clone(), weight.clone(), bias.cloned());
        if let Err(e) = ember_tensor::device::sync(&device) {
            failed.get_or_insert(e);
        }
        drop(out);
    };
    let mut declined = false;
    let mut sparse_run = || {
        if let Path::Float(_) = sparse.linear(x.clone()) {
            declined = true;
        }
    };
    let times = ember_tensor::timing::interleaved_median_us(
        TIMED_ROUNDS,
        &mut [&mut dense, &mut sparse_run],
    );
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(KernelTimes {
        batch,
        dense_us: times[0],
        // A kernel that declined the input (it never does on the host with an f32 weight)
        // must not win by having done nothing.
        sparse_us: if declined { f64::INFINITY } else { times[1] },
    })
}
