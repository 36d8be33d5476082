//! Helpers the fused ops' tests share: deterministic inputs on the flex backend, and
//! agreement of two results relative to the reference's largest value.

use burn::backend::TensorData;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::prelude::Tensor;

/// A flex tensor of `shape` filled with a deterministic wave of frequency `k` (no two
/// inputs built with different `k` alike, no randomness to seed).
pub fn wave(shape: &[usize], k: f32) -> FlexTensor {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| (i as f32 * k).sin() * 2.0 + (i % 3) as f32 * 0.5)
        .collect();
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// Each pair agrees in shape, and in every value to `tolerance` of the reference's (the
/// second's) largest magnitude.
pub fn assert_all_close(pairs: Vec<(&str, FlexTensor, FlexTensor)>, tolerance: f32) {
    for (name, ours, reference) in pairs {
        assert_eq!(ours.shape(), reference.shape(), "{name}");
        let (ours, reference) = (
            ours.into_data().try_into_vec::<f32>().unwrap(),
            reference.into_data().try_into_vec::<f32>().unwrap(),
        );
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in ours.iter().zip(&reference) {
            assert!((a - b).abs() < tolerance * scale, "{name}: {a} vs {b}");
        }
    }
}

/// `ours` agrees with `theirs` in every value to `tolerance` of `theirs`' largest magnitude
/// (for tensors on any backend, autodiff included).
pub fn assert_tensors_close<const D: usize>(
    name: &str,
    ours: Tensor<D>,
    theirs: Tensor<D>,
    tolerance: f32,
) {
    let scale = theirs.clone().abs().max().into_scalar::<f32>().max(1e-6);
    let diff = (ours - theirs).abs().max().into_scalar::<f32>();
    assert!(
        diff < tolerance * scale,
        "{name} differs by {diff} (scale {scale})"
    );
}
