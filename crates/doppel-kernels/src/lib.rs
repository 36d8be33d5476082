//! The sensor model's CPU kernels: each op the network spends its time in, written as one
//! pass (vectorised, split over the cores) with its own backward pass, as a burn backend
//! extension. On burn's CPU backend (flex) they replace chains of small ops; on any other
//! backend (wgpu) each call is burn's own op. Tests hold every kernel, forward and backward,
//! to burn's ops, which stay the reference.
//!
//! Here only arithmetic: nothing about sensors, tokens or training.

/// Self-attention of packed Q, K, V as one op (flash-style: no L × L buffer kept for autodiff).
pub mod attention;
/// Linear layers as one op: packed weights, optional GELU, several layers side by side.
pub mod dense;
/// GELU, softmax and layer norm as single passes.
pub mod fused;
/// Matrix products through `gemm` on views of burn's buffers.
mod matmul;
/// Agreement of two tensors, for tests here and in the model crate.
#[doc(hidden)]
pub mod testing;
