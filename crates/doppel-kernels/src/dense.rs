//! A dense layer, y = x·W + b, as one op with its own backward: a burn backend extension,
//! through `gemm` on burn's CPU backend (flex), burn's own `linear` on any other backend.
//!
//! Why by hand: flex's matmul allocates its output zero-filled as bytes and then copies it
//! once more to align it (`FlexTensor::empty` through `Bytes::from_bytes_vec`), then adds
//! the bias as a separate pass on one core; the backward does the same for dX and dW
//! (docs/BENCHMARKS.md, training speed). Here the
//! output starts as the bias repeated on every row and the product is accumulated into it,
//! and the backward reads the transposes of W and X in place.
//!
//! Must never change what the layer computes beyond float rounding: the tests hold the op
//! and its three gradients to burn's `Linear`.

use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorData, TensorMetadata};
use burn::nn::Linear;
use burn::prelude::Tensor;
use rayon::prelude::*;

use crate::fused::{
    FusedOps, all_f32, contiguous, gelu_in_place, gelu_with_derivative_by_ops, record,
    register_gradients, sum_in_order, widest_simd,
};
use crate::matmul::{View, Write, bands_for, new_product, product_with};

#[burn::backend::backend_extension(Flex, Autodiff, Cube: cfg(feature = "gpu"))]
pub trait DenseOps: Backend {
    /// x·W + b for x [..., d_in], W [d_in, d_out] and b [d_out] → [..., d_out].
    fn fused_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear(x, weight, Some(bias))
    }

    /// GELU(x·W + b): the feed-forward's first layer and its activation.
    fn fused_dense_gelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::gelu(Self::linear(x, weight, Some(bias)))
    }

    /// The same output, and GELU's derivative at x·W + b, for the backward to keep.
    fn fused_dense_gelu_keeping_derivative(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        gelu_with_derivative_by_ops::<Self>(Self::linear(x, weight, Some(bias)))
    }

    /// The gradients of x, W and b through GELU(x·W + b), given the output's and GELU's
    /// derivative that the forward kept.
    fn fused_dense_gelu_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        derivative: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        Self::fused_dense_backward(x, weight, Self::float_mul(derivative, grad))
    }

    /// The gradients of x, W and b given the output's.
    fn fused_dense_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        dense_backward_by_ops::<Self>(x, weight, grad)
    }
}

/// The gradients of x, W and b from burn's own linear-layer ops (backends without a kernel).
fn dense_backward_by_ops<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    (
        B::linear_x_backward(weight, grad.clone()),
        B::linear_weight_backward(x, grad.clone()),
        B::linear_bias_backward(grad),
    )
}

/// `layer` applied to `x` [..., d_in] → [..., d_out], as one fused op where the backend has
/// the kernel (layers without a bias take burn's own path).
pub fn forward<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let Some(bias) = &layer.bias else {
        return layer.forward(x);
    };
    Tensor::from_dispatch(Dispatch::fused_dense(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
    ))
}

/// Several layers that read the same `x` [..., d_in], as one: their outputs side by side
/// [..., Σ d_out], from one product with their weights side by side. One product in place of
/// one a layer (attention's Q, K and V), and in the backward one product for x's gradient
/// instead of one a layer and the sum of them.
pub fn forward_side_by_side<const D: usize>(layers: &[&Linear], x: Tensor<D>) -> Tensor<D> {
    let biases: Option<Vec<Tensor<1>>> = layers
        .iter()
        .map(|layer| layer.bias.as_ref().map(|b| b.val()))
        .collect();
    let Some(biases) = biases else {
        let outputs = layers.iter().map(|layer| forward(layer, x.clone()));
        return Tensor::cat(outputs.collect(), D - 1);
    };
    let weights = layers.iter().map(|layer| layer.weight.val()).collect();
    Tensor::from_dispatch(Dispatch::fused_dense(
        x.into_dispatch(),
        Tensor::cat(weights, 1).into_dispatch(),
        Tensor::cat(biases, 0).into_dispatch(),
    ))
}

/// GELU(`layer`(x)): [..., d_in] → [..., d_out], as one fused op where the backend has the
/// kernel: each core's band of rows goes through the product and then GELU while it is still
/// in cache, and the pre-activation is never kept (the backward needs only GELU's derivative).
pub fn forward_gelu<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let Some(bias) = &layer.bias else {
        return crate::fused::gelu(layer.forward(x));
    };
    Tensor::from_dispatch(Dispatch::fused_dense_gelu(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
    ))
}

#[cfg(feature = "gpu")]
impl DenseOps for burn::backend::Cube {}

/// The rows of x once its leading dimensions are folded, and its width.
fn rows_and_width(x: &impl TensorMetadata) -> (usize, usize) {
    let shape = x.shape();
    let width = shape[shape.num_dims() - 1];
    (shape.num_elements() / width.max(1), width)
}

fn f32_slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// Rows per parallel task of the element-wise passes: about 16 k values a task.
fn rows_per_task(width: usize) -> usize {
    ((1 << 14) / width.max(1)).max(1)
}

/// A band of an op's output rows and the same band of its side buffer, both uninitialised.
type Bands<'a> = (&'a mut [MaybeUninit<f32>], &'a mut [MaybeUninit<f32>]);

/// A dense layer's operands on flex, contiguous, with the product's [rows, d_in, d_out].
struct Operands {
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    dims: [usize; 3],
    /// x's shape with d_out last.
    out_shape: burn::backend::Shape,
}

impl Operands {
    fn of(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> Self {
        let (rows, d_in) = rows_and_width(&x);
        let d_out = weight.shape()[1];
        assert_eq!(
            weight.shape()[0],
            d_in,
            "dense layer: input width {d_in} does not match the weight's {} rows",
            weight.shape()[0]
        );
        let mut out_shape = x.shape();
        let last = out_shape.num_dims() - 1;
        out_shape[last] = d_out;
        Operands {
            x: contiguous(x),
            weight: contiguous(weight),
            bias: contiguous(bias),
            dims: [rows, d_in, d_out],
            out_shape,
        }
    }

    /// x·W + b [rows, d_out], one band of rows a core (one band in all for products too
    /// small to split): each band starts as the bias on every row, the product is
    /// accumulated onto it on that core, and `finish(band, side)` runs while the band is
    /// still in cache. With `side`, a second [rows, d_out] buffer is cut into the same bands
    /// for `finish` to fill; without, `finish` gets an empty one. One parallel op where the
    /// bias, the product and an activation were three, each a pass over memory.
    fn product_in_bands(
        &self,
        side: Option<&mut [MaybeUninit<f32>]>,
        finish: impl Fn(&mut [f32], &mut [MaybeUninit<f32>]) + Sync,
    ) -> Vec<f32> {
        let [rows, d_in, d_out] = self.dims;
        let (x, weight, bias) = (
            f32_slice(&self.x),
            f32_slice(&self.weight),
            f32_slice(&self.bias),
        );
        let band = rows.div_ceil(bands_for(self.dims)).max(1) * d_out; // values
        let run = |(i, (out, side)): (usize, Bands<'_>)| {
            for row in out.chunks_exact_mut(d_out) {
                for (slot, &b) in row.iter_mut().zip(bias) {
                    slot.write(b);
                }
            }
            // SAFETY: every value of the band was written just above (whole rows).
            let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
            let first = i * band / d_out;
            product_with(
                [out.len() / d_out, d_in, d_out],
                1.0,
                (&x[first * d_in..], View::rows_of(d_in)),
                (weight, View::rows_of(d_out)),
                (out, View::rows_of(d_out)),
                Write::Accumulate,
                false,
            );
            finish(out, side);
        };
        let mut out = Vec::with_capacity(rows * d_out);
        let values = &mut out.spare_capacity_mut()[..rows * d_out];
        match side {
            Some(side) => values
                .par_chunks_mut(band)
                .zip(side.par_chunks_mut(band))
                .enumerate()
                .for_each(run),
            None => values
                .par_chunks_mut(band)
                .map(|out| (out, &mut [][..]))
                .enumerate()
                .for_each(run),
        }
        // SAFETY: the bands cover all rows × d_out values, and each wrote all of its own.
        unsafe { out.set_len(rows * d_out) };
        out
    }
}

/// A band's GELU, and its derivative into `side` unless that is empty: the epilogue of
/// `fused_dense_gelu` with or without the derivative kept.
fn gelu_epilogue(band: &mut [f32], side: &mut [MaybeUninit<f32>]) {
    widest_simd(
        #[inline(always)]
        || gelu_in_place(band, side),
    )
}

/// The sum of the rows of a [rows, width] matrix: each task sums its rows, then the
/// partial sums are added in order (the same seed, the same weights).
fn column_sums(matrix: &[f32], width: usize) -> Vec<f32> {
    let partials = matrix
        .par_chunks(rows_per_task(width) * width)
        .map(|task| {
            let mut sums = vec![0.0f32; width];
            for row in task.chunks_exact(width) {
                sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            sums
        })
        .collect();
    sum_in_order(partials, width)
}

impl DenseOps for Flex {
    fn fused_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&x, &weight, &bias]) {
            return Flex::linear(x, weight, Some(bias));
        }
        let operands = Operands::of(x, weight, bias);
        let out = operands.product_in_bands(None, |_, _| {});
        FlexTensor::from_data(TensorData::new(out, operands.out_shape))
    }

    fn fused_dense_gelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&x, &weight, &bias]) {
            return Flex::fused_gelu(Flex::linear(x, weight, Some(bias)));
        }
        let operands = Operands::of(x, weight, bias);
        let out = operands.product_in_bands(None, gelu_epilogue);
        FlexTensor::from_data(TensorData::new(out, operands.out_shape))
    }

    fn fused_dense_gelu_keeping_derivative(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &weight, &bias]) {
            return Flex::fused_gelu_with_derivative(Flex::linear(x, weight, Some(bias)));
        }
        let operands = Operands::of(x, weight, bias);
        let [rows, _, d_out] = operands.dims;
        let mut derivative = Vec::with_capacity(rows * d_out);
        let out = operands.product_in_bands(
            Some(&mut derivative.spare_capacity_mut()[..rows * d_out]),
            gelu_epilogue,
        );
        // SAFETY: each band's `finish` wrote GELU's derivative at every value of its band,
        // and the bands cover all rows × d_out values.
        unsafe { derivative.set_len(rows * d_out) };
        let shape = operands.out_shape;
        (
            FlexTensor::from_data(TensorData::new(out, shape.clone())),
            FlexTensor::from_data(TensorData::new(derivative, shape)),
        )
    }

    fn fused_dense_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &weight, &grad]) {
            return dense_backward_by_ops::<Flex>(x, weight, grad);
        }
        let x_shape = x.shape();
        let (rows, d_in) = rows_and_width(&x);
        let d_out = weight.shape()[1];
        let (x, weight, grad) = (contiguous(x), contiguous(weight), contiguous(grad));
        let (x, weight, grad) = (f32_slice(&x), f32_slice(&weight), f32_slice(&grad));

        // dX = dY·Wᵀ: [rows, d_out] × [d_out, d_in]
        let dx = new_product(
            [rows, d_out, d_in],
            1.0,
            (grad, View::rows_of(d_out)),
            (weight, View::rows_of(d_out).transposed()),
            true,
        );
        // dW = Xᵀ·dY: [d_in, rows] × [rows, d_out], the sum over every row in one product
        let dw = new_product(
            [d_in, rows, d_out],
            1.0,
            (x, View::rows_of(d_in).transposed()),
            (grad, View::rows_of(d_out)),
            true,
        );
        // db = Σ dY over the rows
        let db = column_sums(grad, d_out);
        (
            FlexTensor::from_data(TensorData::new(dx, x_shape)),
            FlexTensor::from_data(TensorData::new(dw, [d_in, d_out])),
            FlexTensor::from_data(TensorData::new(db, [d_out])),
        )
    }
}

impl<B: DenseOps, C: CheckpointStrategy> DenseOps for Autodiff<B, C> {
    fn fused_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DenseOp;

        impl<B: DenseOps> Backward<B, 3> for DenseOp {
            /// The input and the weight.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                register_gradients::<B, _, 3>(ops, grads, |(x, weight), grad| {
                    let (dx, dw, db) = B::fused_dense_backward(x, weight, grad);
                    [dx, dw, db]
                });
            }
        }

        record::<B, C, _, 3>(
            DenseOp,
            [x, weight, bias],
            |[x, weight, bias]| {
                let out = B::fused_dense(x.clone(), weight.clone(), bias);
                ((x, weight), out)
            },
            |[x, weight, bias]| B::fused_dense(x, weight, bias),
        )
    }

    fn fused_dense_gelu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DenseGeluOp;

        impl<B: DenseOps> Backward<B, 3> for DenseGeluOp {
            /// The input, the weight and GELU's derivative at the pre-activation.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                register_gradients::<B, _, 3>(ops, grads, |(x, weight, derivative), grad| {
                    let (dx, dw, db) = B::fused_dense_gelu_backward(x, weight, derivative, grad);
                    [dx, dw, db]
                });
            }
        }

        record::<B, C, _, 3>(
            DenseGeluOp,
            [x, weight, bias],
            |[x, weight, bias]| {
                let (out, derivative) =
                    B::fused_dense_gelu_keeping_derivative(x.clone(), weight.clone(), bias);
                ((x, weight, derivative), out)
            },
            |[x, weight, bias]| B::fused_dense_gelu(x, weight, bias),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_close, wave};
    use burn::nn::LinearConfig;
    use burn::prelude::*;

    fn assert_close<const D: usize>(name: &str, ours: Tensor<D>, theirs: Tensor<D>) {
        crate::testing::assert_tensors_close(name, ours, theirs, 1e-5);
    }

    /// Holds `ours` to `theirs` (one layer computed two ways) on random inputs [1, rows,
    /// d_in] of each shape: the output, and the gradients of x, W and b.
    fn assert_matches_burn(
        seed: u64,
        shapes: &[(usize, usize, usize)],
        ours: impl Fn(&Linear, Tensor<3>) -> Tensor<3>,
        theirs: impl Fn(&Linear, Tensor<3>) -> Tensor<3>,
    ) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let random = |shape| {
            Tensor::<3>::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device)
        };
        for &(rows, d_in, d_out) in shapes {
            let layer = LinearConfig::new(d_in, d_out).init(&device);
            let x = random([1, rows, d_in]).require_grad();
            let w = random([1, rows, d_out]);
            let (ours, theirs) = (ours(&layer, x.clone()), theirs(&layer, x.clone()));
            assert_eq!(ours.dims(), [1, rows, d_out]);
            assert_close("output", ours.clone(), theirs.clone());
            let grads_ours = (ours * w.clone()).sum().backward();
            let grads_theirs = (theirs * w).sum().backward();
            let at = format!("at {rows}×{d_in}→{d_out}");
            let bias = layer.bias.as_ref().unwrap();
            assert_close(
                &format!("dX {at}"),
                x.grad(&grads_ours).unwrap(),
                x.grad(&grads_theirs).unwrap(),
            );
            assert_close(
                &format!("dW {at}"),
                layer.weight.grad(&grads_ours).unwrap(),
                layer.weight.grad(&grads_theirs).unwrap(),
            );
            assert_close(
                &format!("db {at}"),
                bias.grad(&grads_ours).unwrap(),
                bias.grad(&grads_theirs).unwrap(),
            );
        }
    }

    #[test]
    fn the_dense_op_matches_burns_linear_and_its_three_gradients() {
        // Widths of the model's layers, one of a single row and one past the parallel line.
        assert_matches_burn(
            5,
            &[(51, 16, 64), (1, 7, 3), (700, 128, 512), (9, 1, 1)],
            forward,
            |layer, x| layer.forward(x),
        );
    }

    #[test]
    fn the_dense_gelu_op_matches_burns_linear_then_gelu_and_the_gradients() {
        // A product too small to split, and one split into a band a core.
        assert_matches_burn(
            9,
            &[(13, 8, 32), (700, 128, 512)],
            forward_gelu,
            |layer, x| burn::tensor::activation::gelu(layer.forward(x)),
        );
        // Without autodiff, the output alone.
        let device = Device::flex();
        let layer = LinearConfig::new(5, 7).init(&device);
        let x = Tensor::<2>::random([4, 5], burn::tensor::Distribution::Default, &device);
        let theirs = burn::tensor::activation::gelu(layer.forward(x.clone()));
        assert_close("inference output", forward_gelu(&layer, x), theirs);
    }

    #[test]
    fn bias_gradients_are_summed_in_the_same_order_every_time() {
        // Rows enough for many parallel tasks; the sums must not depend on which thread
        // took which task, or the same seed would not give the same weights.
        let (rows, width) = (20_000, 24);
        let matrix: Vec<f32> = (0..rows * width)
            .map(|i| ((i as f32) * 0.618).sin() * 1e3)
            .collect();
        let in_order: Vec<f32> = matrix
            .chunks(rows_per_task(width) * width)
            .map(|task| {
                let mut sums = vec![0.0f32; width];
                for row in task.chunks_exact(width) {
                    sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
                }
                sums
            })
            .fold(vec![0.0f32; width], |mut total, part| {
                total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
                total
            });
        for _ in 0..20 {
            let sums = column_sums(&matrix, width);
            assert!(
                sums.iter()
                    .zip(&in_order)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "column sums differ from the in-order sum: {sums:?} vs {in_order:?}"
            );
        }
    }

    #[test]
    fn the_fallback_bodies_agree_with_the_kernel_forward_and_backward() {
        // Other backends (wgpu) run the trait's default bodies: burn's own linear.
        let (b, l, d_in, d_out) = (2, 13, 6, 10);
        let x = wave(&[b, l, d_in], 0.37);
        let weight = wave(&[d_in, d_out], 1.13);
        let bias = wave(&[d_out], 0.71);
        let grad = wave(&[b, l, d_out], 0.29);
        let ours = Flex::fused_dense(x.clone(), weight.clone(), bias.clone());
        let theirs = Flex::linear(x.clone(), weight.clone(), Some(bias.clone()));
        let (gelu, derivative) =
            Flex::fused_dense_gelu_keeping_derivative(x.clone(), weight.clone(), bias);
        let (gelu_by_ops, derivative_by_ops) = gelu_with_derivative_by_ops::<Flex>(theirs.clone());
        let grads = Flex::fused_dense_backward(x.clone(), weight.clone(), grad.clone());
        let by_ops = dense_backward_by_ops::<Flex>(x, weight.clone(), grad);
        assert_all_close(
            vec![
                ("output", ours, theirs),
                ("GELU output", gelu, gelu_by_ops),
                ("GELU derivative", derivative, derivative_by_ops),
                ("dX", grads.0, by_ops.0),
                ("dW", grads.1, by_ops.1),
                ("db", grads.2, by_ops.2),
            ],
            1e-5,
        );
    }
}
