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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{DType, Tensor};
use ember_kernels::Csr;
use serde::{Deserialize, Serialize};

use crate::nn::{Path, QuantLayers};
use crate::{Error, Result};

/// The weight sparsity from which [`SparseKernel::Auto`] takes the sparse kernel: a margin
/// above where `Csr::linear` overtakes flex's dense matmul on both cores of the development
/// machine (`cargo bench -p ember-benches --bench sparse`, batch 256: 1.15x at 50 %, 1.7x at
/// 70 %, 3.4x at 90 % on a 784 x 300 layer; the same on 1024 x 1024).
pub const SPARSE_CROSSOVER: f64 = 0.6;

/// Which kernel a pruned layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SparseKernel {
    /// Sparse when the layer's weight is at least [`SPARSE_CROSSOVER`] zeros.
    #[default]
    Auto,
    /// Sparse whatever the sparsity (for tests and measurements).
    Always,
    /// Dense: detach any sparse form.
    Never,
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
    /// The fraction of its weight that is zero (masks applied).
    pub sparsity: f64,
    /// Whether it now runs on the sparse kernel on host devices.
    pub sparse: bool,
}

/// Give every fully connected drop-in layer of `model` a sparse form as `choice` says, from
/// its weight as it is now (masks applied). Convolutions and layers that quantize their input
/// (they have the integer path) stay as they are. A weight holding NaN or infinity is an
/// error: its sparse product would not be the model's.
///
/// ```
/// use burn::tensor::Device;
/// use ember_prune::{PruneConfig, Scope, prune};
/// use ember_quant::{SparseKernel, use_sparse_kernel};
/// use ember_zoo::MlpConfig;
///
/// let device = Device::flex();
/// let config = MlpConfig { input: 64, hidden: vec![64], classes: 10, dropout: 0.0 };
/// let per_layer = PruneConfig::global_magnitude(0.9).with_scope(Scope::Layer);
/// let (mut model, _) = prune(config.init(&device)?, &per_layer)?;
/// // Past the measured crossover (60 % zeros), both layers run on the CSR kernel.
/// let layers = use_sparse_kernel(&mut model, SparseKernel::Auto)?;
/// assert!(layers.iter().all(|l| l.sparse));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn use_sparse_kernel<M: QuantLayers>(
    model: &mut M,
    choice: SparseKernel,
) -> Result<Vec<SparseLayer>> {
    let mut report = vec![];
    for (path, layer) in model.quant_layers() {
        if let Some(sparsity) = layer.set_sparse(choice).map_err(|e| match e {
            Error::NonFinite { count, first, .. } => Error::NonFinite {
                what: format!("{path}.weight"),
                count,
                first,
            },
            other => other,
        })? {
            report.push(SparseLayer {
                path,
                sparsity,
                sparse: layer.sparse().is_some(),
            });
        }
    }
    Ok(report)
}
