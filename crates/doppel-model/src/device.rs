//! Where the model runs: the CPU (burn's `flex` backend) always; a GPU through burn's `wgpu`
//! backend when doppel is built with the `gpu` feature. Model code never names a backend.

use burn::prelude::Device;

use crate::error::Result;

/// Which kind of device to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accelerator {
    #[default]
    Cpu,
    /// The best GPU wgpu finds (Vulkan, Metal or DX12).
    Gpu,
}

/// The device to run inference on.
pub fn inference(accelerator: Accelerator) -> Result<Device> {
    match accelerator {
        Accelerator::Cpu => Ok(Device::flex()),
        Accelerator::Gpu => gpu(),
    }
}

/// The device to train on (with automatic differentiation).
pub fn training(accelerator: Accelerator) -> Result<Device> {
    inference(accelerator).map(Device::autodiff)
}

#[cfg(feature = "gpu")]
fn gpu() -> Result<Device> {
    Ok(Device::wgpu(burn::prelude::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "gpu"))]
fn gpu() -> Result<Device> {
    Err(crate::error::ModelError::Settings(
        "this doppel was built without GPU support; build it with \
         `cargo build --release -p doppel --features gpu`"
            .into(),
    ))
}

/// Runs `work` on a thread of rayon's pool (at once when already on one). The CPU backend's
/// ops and the fused kernels split their work with rayon; called from a thread outside the
/// pool, each op wakes the pool's threads and puts the caller to sleep until they finish,
/// and on two cores that sleeping and waking took a large share of a training step. On a
/// worker, the op splits its work with the calling thread instead, with the same losses.
pub fn on_a_worker<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}
