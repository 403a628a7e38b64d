//! One test body, run on every backend the calling crate enables.
//!
//! ```ignore
//! ember_tensor::backend_tests! {
//!     fn forward_is_finite(device) {
//!         let x = burn::tensor::Tensor::<1>::ones([3], &device);
//!         assert_eq!(x.sum().into_scalar(), 3.0);
//!     }
//! }
//! ```
//! expands to a module `forward_is_finite` with the tests `flex`, `ndarray` and `wgpu`, each
//! compiled only where the calling crate has the cargo feature of that name, so
//! `cargo test -- forward_is_finite` runs the body on each backend and a failure names the
//! backend.

/// See the [module docs](crate::testing).
#[macro_export]
macro_rules! backend_tests {
    ($( $(#[$meta:meta])* fn $name:ident($device:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[allow(dead_code)]
                fn body($device: burn::tensor::Device) $body

                #[cfg(feature = "flex")]
                #[test]
                fn flex() {
                    body($crate::BackendKind::Flex.device().expect("flex is compiled in"))
                }

                #[cfg(feature = "ndarray")]
                #[test]
                fn ndarray() {
                    body($crate::BackendKind::NdArray.device().expect("ndarray is compiled in"))
                }

                #[cfg(feature = "wgpu")]
                #[test]
                fn wgpu() {
                    body($crate::BackendKind::Wgpu.device().expect("wgpu is compiled in"))
                }
            }
        )*
    };
}

/// Hold this while seeding a device and drawing from it in a test. burn's RNG is one per device
/// and process, and the test harness runs tests on parallel threads: without the lock, another
/// test can draw from the stream between a seed and its use, and a seeded result changes.
pub fn seeded_lock() -> std::sync::MutexGuard<'static, ()> {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SEEDED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
