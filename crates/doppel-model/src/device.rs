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
