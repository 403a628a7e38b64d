//! Backends by name, device sync and dtype support.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The backends Ember runs on. Which of them can make a [`Device`] depends on the cargo
/// features this crate was built with (`flex`, `ndarray`, `wgpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend, the default.
    #[default]
    Flex,
    /// The ndarray CPU backend (no f16/bf16, no 4-bit storage).
    NdArray,
    /// The wgpu GPU backend (Vulkan, Metal, DX12; Mesa's software Vulkan where there is no GPU).
    Wgpu,
}

impl BackendKind {
    /// Every backend Ember knows, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::NdArray, BackendKind::Wgpu];

    /// The name used on command lines, in reports and in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this build can make a device of this backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends this build can run on, in [`BackendKind::ALL`] order.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The default device of this backend (the first GPU wgpu finds, or its software adapter).
    pub fn device(self) -> Result<Device> {
        match self {
            #[cfg(feature = "flex")]
            BackendKind::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)] // deprecated upstream, but the backend our users named
            BackendKind::NdArray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[allow(unreachable_patterns)]
            other => Err(Error::BackendNotCompiled { name: other.name() }),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| Error::UnknownBackend {
                name: name.to_string(),
                expected: Self::ALL.map(BackendKind::name).join(", "),
            })
    }
}

/// A float storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FloatType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision: 10 mantissa bits, range up to 65504.
    F16,
    /// bfloat16: f32's range with 7 mantissa bits.
    BF16,
}

impl FloatType {
    /// burn's dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
        }
    }
}

/// Whether `device` computes in this process's memory with plain (non-autodiff) tensors: flex
/// or ndarray, where host kernels (ember-kernels' integer GEMM) can take over an operation.
pub fn is_host(device: &Device) -> bool {
    matches!(
        backend_of(device),
        Some(BackendKind::Flex | BackendKind::NdArray)
    )
}

/// The backend of a plain (non-autodiff) device, if it is one Ember knows by name.
pub fn backend_of(device: &Device) -> Option<BackendKind> {
    // burn names no backend in its device's public API; its debug form does, and costs less
    // than a microsecond next to the matrix product `is_host` decides about.
    let name = format!("{:?}", device.as_dispatch()).to_lowercase();
    BackendKind::ALL
        .into_iter()
        .find(|b| name.starts_with(b.name()))
}

/// Wait until the device has finished all queued work; GPU timings need it inside the timed
/// region.
pub fn sync(device: &Device) -> Result<()> {
    device.sync().map_err(|e| Error::Sync {
        device: format!("{device:?}"),
        reason: format!("{e:?}"),
    })
}

/// Whether the device can hold tensors of `dtype`.
pub fn supports_dtype(device: &Device, dtype: DType) -> bool {
    device.supports_dtype(dtype)
}

/// A typed error instead of the backend's panic when a device cannot hold `dtype`.
pub fn require_dtype(device: &Device, dtype: DType) -> Result<()> {
    if supports_dtype(device, dtype) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            device: format!("{device:?}"),
            dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_devices_are_the_plain_cpu_ones() {
        #[allow(deprecated)]
        for device in [Device::flex(), Device::ndarray()] {
            assert!(is_host(&device), "{device:?}");
            assert!(
                !is_host(&device.clone().autodiff()),
                "{device:?} with autodiff"
            );
        }
    }

    #[test]
    fn names_round_trip_and_ignore_case() {
        for backend in BackendKind::ALL {
            assert_eq!(backend.name().parse::<BackendKind>(), Ok(backend));
            assert_eq!(
                backend.name().to_uppercase().parse::<BackendKind>(),
                Ok(backend)
            );
        }
    }

    #[test]
    fn unknown_name_is_a_typed_error_listing_the_known_ones() {
        let err = "cuda9".parse::<BackendKind>().unwrap_err();
        assert_eq!(
            err,
            Error::UnknownBackend {
                name: "cuda9".into(),
                expected: "flex, ndarray, wgpu".into()
            }
        );
        assert!(err.to_string().contains("cuda9"));
    }

    #[test]
    #[allow(deprecated)]
    fn ndarray_cannot_hold_half_precision() {
        let device = Device::ndarray();
        assert!(require_dtype(&device, DType::F32).is_ok());
        assert!(matches!(
            require_dtype(&device, DType::F16),
            Err(Error::UnsupportedDType {
                dtype: DType::F16,
                ..
            })
        ));
        assert!(require_dtype(&Device::flex(), DType::F16).is_ok());
    }
}
