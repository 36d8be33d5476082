//! A dense layer, y = x·W + b, as one op with its own backward: a burn backend extension,
//! through `gemm` on burn's CPU backend (flex), burn's own `linear` on any other backend.
//!
//! Why by hand: flex's matmul allocates its output zero-filled as bytes and then copies it
//! once more to align it (`FlexTensor::empty` through `Bytes::from_bytes_vec`), then adds
//! the bias as a separate pass on one core; the backward does the same for dX and dW. The
//! copies alone were about 7 % of a training step of the `small` model, and the op as a
//! whole made training 25 % (`tiny`) to 42 % (`small`) faster (docs/BENCHMARKS.md). Here the
//! output starts as the bias repeated on every row and the product is accumulated into it,
//! and the backward reads the transposes of W and X in place.
//!
//! Must never change what the layer computes beyond float rounding: the tests hold the op
//! and its three gradients to burn's `Linear`.

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

use crate::fused::{all_f32, contiguous, record, register_gradients, sum_in_order};
use crate::matmul::{View, Write, new_product, product_with};

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

/// `rows` copies of `bias`, one after the other, written by every core.
fn bias_on_every_row(bias: &[f32], rows: usize) -> Vec<f32> {
    let width = bias.len();
    let mut out = Vec::with_capacity(rows * width);
    out.spare_capacity_mut()
        .par_chunks_mut(rows_per_task(width) * width)
        .for_each(|task| {
            for row in task.chunks_exact_mut(width) {
                for (slot, &b) in row.iter_mut().zip(bias) {
                    slot.write(b);
                }
            }
        });
    // SAFETY: the capacity is rows × width values, every chunk of it is whole rows, and
    // every value of every row was written above.
    unsafe { out.set_len(rows * width) };
    out
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
        let mut shape = x.shape();
        let (rows, d_in) = rows_and_width(&x);
        let d_out = weight.shape()[1];
        assert_eq!(
            weight.shape()[0],
            d_in,
            "dense layer: input width {d_in} does not match the weight's {} rows",
            weight.shape()[0]
        );
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let bias = f32_slice(&bias);
        let mut out = bias_on_every_row(bias, rows);
        product_with(
            [rows, d_in, d_out],
            1.0,
            (f32_slice(&x), View::rows_of(d_in)),
            (f32_slice(&weight), View::rows_of(d_out)),
            (&mut out, View::rows_of(d_out)),
            Write::Accumulate,
            true,
        );
        let last = shape.num_dims() - 1;
        shape[last] = d_out;
        FlexTensor::from_data(TensorData::new(out, shape))
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

    #[test]
    fn the_dense_op_matches_burns_linear_and_its_three_gradients() {
        let device = Device::flex().autodiff();
        device.seed(5);
        // Widths of the model's layers, one of a single row and one past the parallel line.
        for (rows, d_in, d_out) in [(51, 16, 64), (1, 7, 3), (700, 128, 512), (9, 1, 1)] {
            let layer = LinearConfig::new(d_in, d_out).init(&device);
            let x = Tensor::<3>::random(
                [1, rows, d_in],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            )
            .require_grad();
            let w = Tensor::<3>::random(
                [1, rows, d_out],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let ours = forward(&layer, x.clone());
            let theirs = layer.forward(x.clone());
            assert_eq!(ours.dims(), [1, rows, d_out]);
            assert_close("output", ours.clone(), theirs.clone());
            let grads_ours = (ours * w.clone()).sum().backward();
            let grads_theirs = (theirs * w).sum().backward();
            let at = format!("at {rows}×{d_in}→{d_out}");
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
            let bias = layer.bias.as_ref().unwrap();
            assert_close(
                &format!("db {at}"),
                bias.grad(&grads_ours).unwrap(),
                bias.grad(&grads_theirs).unwrap(),
            );
        }
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
        let bias = [1.0f32, -2.0, 3.5];
        assert_eq!(bias_on_every_row(&bias, 40_000).len(), 120_000);
        assert!(
            bias_on_every_row(&bias, 40_000)
                .chunks_exact(3)
                .all(|row| row == bias)
        );
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
        let theirs = Flex::linear(x.clone(), weight.clone(), Some(bias));
        let grads = Flex::fused_dense_backward(x.clone(), weight.clone(), grad.clone());
        let by_ops = dense_backward_by_ops::<Flex>(x, weight.clone(), grad);
        assert_all_close(
            vec![
                ("output", ours, theirs),
                ("dX", grads.0, by_ops.0),
                ("dW", grads.1, by_ops.1),
                ("db", grads.2, by_ops.2),
            ],
            1e-5,
        );
    }
}
