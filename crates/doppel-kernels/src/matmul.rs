//! Matrix products for the fused ops (`attention.rs`, `dense.rs`), through `gemm`, the crate
//! under burn's own CPU matmul, on matrices read in place: a head inside a projection, a
//! transpose, a batch of rows folded into one matrix. Nothing is copied to make an operand
//! contiguous.
//!
//! Large products run one band of output rows (or columns) a core, each band a
//! single-threaded `gemm` call; the inner dimension is never split, so the result does not
//! depend on the number of cores.
//!
//! Must never read or write outside the buffers it is given: `product_into` checks the last
//! element each matrix will touch before handing raw pointers to `gemm`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A matrix inside a buffer: where it starts and how far apart its rows and columns lie (in
/// values), so that heads and transposes are read in place.
#[derive(Clone, Copy)]
pub(crate) struct View {
    pub offset: usize,
    pub row_stride: usize,
    pub column_stride: usize,
}

impl View {
    /// A dense row-major matrix of rows `columns` values long.
    pub fn rows_of(columns: usize) -> Self {
        View {
            offset: 0,
            row_stride: columns,
            column_stride: 1,
        }
    }

    pub fn transposed(self) -> Self {
        View {
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }
}

/// What a product does with what its output already holds.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Write {
    /// out = scale · lhs · rhs
    Overwrite,
    /// out += scale · lhs · rhs
    Accumulate,
}

/// Products below this many multiply-adds run on the calling thread: splitting them costs
/// more than it gains (burn's flex matmul draws the line at the same place).
const PARALLEL_FROM: usize = 192 * 192 * 192;

/// Bands of output rows a product of `[m, k, n]` is split into: one a core, or one in all
/// when it is too small for the split to pay. The dense layer's banded forward cuts its rows
/// by the same rule.
pub(crate) fn bands_for([m, k, n]: [usize; 3]) -> usize {
    if m.saturating_mul(k).saturating_mul(n) < PARALLEL_FROM {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// `out = scale · lhs · rhs` for `lhs` [m, k] and `rhs` [k, n], on the calling thread: for
/// kernels whose own tasks are the parallel unit (the attention's windows).
pub(crate) fn product(
    dims: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    out: (&mut [f32], View),
) {
    product_with(dims, scale, lhs, rhs, out, Write::Overwrite, false);
}

/// `out (+)= scale · lhs · rhs` for `lhs` [m, k] and `rhs` [k, n]; large products are split
/// over every core when `parallel`.
pub(crate) fn product_with(
    dims: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    out: (&mut [f32], View),
    write: Write,
    parallel: bool,
) {
    let (values, view) = out;
    // SAFETY: the pointer and length are those of a slice borrowed mutably for the call.
    unsafe {
        product_into(
            dims,
            scale,
            lhs,
            rhs,
            (values.as_mut_ptr(), values.len(), view),
            write,
            parallel,
        )
    }
}

/// `scale · lhs · rhs` for `lhs` [m, k] and `rhs` [k, n] as a new row-major [m, n] matrix,
/// split over every core when `parallel`. The buffer is not zero-filled first: `gemm`
/// overwrites every value without reading it, so zeros would be one more pass over memory
/// for nothing (a profile of training showed that pass).
pub(crate) fn new_product(
    dims: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    parallel: bool,
) -> Vec<f32> {
    let [m, _, n] = dims;
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let values = &mut out.spare_capacity_mut()[..m * n];
    product_into_uninit(dims, scale, lhs, rhs, (values, View::rows_of(n)), parallel);
    // SAFETY: the product wrote every value of the dense [m, n] view, all m × n of them.
    unsafe { out.set_len(m * n) };
    out
}

/// `scale · lhs · rhs` into values that may be uninitialised: an overwriting product writes
/// every value of the [m, n] view and reads none.
pub(crate) fn product_into_uninit(
    dims: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    out: (&mut [MaybeUninit<f32>], View),
    parallel: bool,
) {
    let (values, view) = out;
    // SAFETY: the pointer and length are those of a slice borrowed mutably for the call,
    // and an overwriting product never reads what it points to.
    unsafe {
        product_into(
            dims,
            scale,
            lhs,
            rhs,
            (values.as_mut_ptr().cast::<f32>(), values.len(), view),
            Write::Overwrite,
            parallel,
        )
    }
}

/// The product into `out`: a pointer to `len` values (initialised or not when `write`
/// overwrites: they are then never read) and the view of the [m, n] matrix inside them.
///
/// # Safety
/// `out` points to `len` values that nothing else reads or writes during the call.
unsafe fn product_into(
    [m, k, n]: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    out: (*mut f32, usize, View),
    write: Write,
    parallel: bool,
) {
    let (out_ptr, out_len, out_view) = out;
    if m == 0 || n == 0 {
        return;
    }
    let last = |v: View, rows: usize, columns: usize| {
        v.offset + (rows - 1) * v.row_stride + (columns - 1) * v.column_stride
    };
    // The bounds `gemm` will touch, checked once here, as it reads raw pointers.
    assert!(
        last(out_view, m, n) < out_len
            && (k == 0 || (last(lhs.1, m, k) < lhs.0.len() && last(rhs.1, k, n) < rhs.0.len())),
        "a product's operands lie outside their buffers"
    );
    let out_ptr = SharedOut(out_ptr);
    if k == 0 {
        // An empty sum: gemm would not touch the operands, and their bounds are not defined.
        if write == Write::Overwrite {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: within the output's bounds, checked above.
                    unsafe {
                        out_ptr
                            .at(out_view.offset
                                + i * out_view.row_stride
                                + j * out_view.column_stride)
                            .write(0.0)
                    };
                }
            }
        }
        return;
    }
    let accumulate = write == Write::Accumulate;
    let run = |[i0, i1]: [usize; 2], [j0, j1]: [usize; 2]| {
        // SAFETY: the block [i0, i1) × [j0, j1) lies within the bounds checked above, and
        // the blocks given to different tasks are disjoint; the caller guarantees that
        // nothing else reads or writes the output meanwhile.
        unsafe {
            block(
                [i1 - i0, k, j1 - j0],
                scale,
                lhs.0.as_ptr().add(lhs.1.offset + i0 * lhs.1.row_stride),
                lhs.1,
                rhs.0.as_ptr().add(rhs.1.offset + j0 * rhs.1.column_stride),
                rhs.1,
                out_ptr
                    .at(out_view.offset + i0 * out_view.row_stride + j0 * out_view.column_stride),
                out_view,
                accumulate,
            )
        }
    };
    let tasks = if parallel { bands_for([m, k, n]) } else { 1 };
    if tasks < 2 {
        run([0, m], [0, n]);
    } else if m >= n {
        // One band of rows a core: each task packs the right operand itself and never
        // waits on another, unlike gemm's own split, which synchronises its tasks
        // block by block.
        (0..tasks)
            .into_par_iter()
            .for_each(|t| run([m * t / tasks, m * (t + 1) / tasks], [0, n]));
    } else {
        (0..tasks)
            .into_par_iter()
            .for_each(|t| run([0, m], [n * t / tasks, n * (t + 1) / tasks]));
    }
}

/// The output pointer, shared by tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the tasks that share it write disjoint blocks (see `product_with`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` lies within the buffer the pointer came from.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// One `gemm` call on the calling thread, on operands already offset to the block.
///
/// # Safety
/// Every element of the [m, k], [k, n] and [m, n] matrices the views describe from these
/// pointers lies within live buffers, and no other thread touches the output block.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    [m, k, n]: [usize; 3],
    scale: f32,
    lhs: *const f32,
    lhs_view: View,
    rhs: *const f32,
    rhs_view: View,
    out: *mut f32,
    out_view: View,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let stride = |s: usize| s as isize;
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            stride(out_view.column_stride),
            stride(out_view.row_stride),
            accumulate,
            lhs,
            stride(lhs_view.column_stride),
            stride(lhs_view.row_stride),
            rhs,
            stride(rhs_view.column_stride),
            stride(rhs_view.row_stride),
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by definition, for the tests.
    fn naive(m: usize, k: usize, n: usize, a: &[f32], av: View, b: &[f32], bv: View) -> Vec<f32> {
        let at = |x: &[f32], v: View, i: usize, j: usize| {
            x[v.offset + i * v.row_stride + j * v.column_stride]
        };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(a, av, i, p) * at(b, bv, p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn products_read_views_in_place_overwrite_or_accumulate_and_split_large_ones() {
        let values =
            |len: usize, k: f32| -> Vec<f32> { (0..len).map(|i| ((i as f32) * k).sin()).collect() };
        // One small (calling thread), and two past the parallel line: split into bands of
        // rows (taller than wide) and of columns (wider than tall).
        for (m, k, n) in [(5, 3, 4), (300, 200, 150), (150, 200, 300)] {
            let a = values(m * k, 0.3); // [m, k]
            let bt = values(n * k + 2, 0.7); // [n, k] from offset 2, read as its transpose
            let bv = View {
                offset: 2,
                ..View::rows_of(k)
            }
            .transposed();
            let expected = naive(m, k, n, &a, View::rows_of(k), &bt, bv);
            let mut out = vec![1.0; m * n];
            product_with(
                [m, k, n],
                0.5,
                (&a, View::rows_of(k)),
                (&bt, bv),
                (&mut out, View::rows_of(n)),
                Write::Accumulate,
                true,
            );
            for (o, e) in out.iter().zip(&expected) {
                assert!((o - (1.0 + 0.5 * e)).abs() < 1e-3, "{o} vs 1 + {e}/2");
            }
            product(
                [m, k, n],
                1.0,
                (&a, View::rows_of(k)),
                (&bt, bv),
                (&mut out, View::rows_of(n)),
            );
            for (o, e) in out.iter().zip(&expected) {
                assert!((o - e).abs() < 1e-3, "{o} vs {e}");
            }
            // Into a new buffer, never zero-filled: the same values, bit for bit.
            let fresh = new_product([m, k, n], 1.0, (&a, View::rows_of(k)), (&bt, bv), true);
            assert_eq!(fresh, out);
        }
        // An empty sum into a new buffer: zeros.
        assert_eq!(
            new_product(
                [3, 0, 2],
                1.0,
                (&[], View::rows_of(0)),
                (&[], View::rows_of(2)),
                true
            ),
            vec![0.0; 6]
        );
    }

    #[test]
    #[should_panic(expected = "outside their buffers")]
    fn operands_too_short_for_their_shape_are_refused() {
        let a = vec![0.0; 5];
        let mut out = vec![0.0; 4];
        product(
            [2, 3, 2],
            1.0,
            (&a, View::rows_of(3)),
            (&a, View::rows_of(2)),
            (&mut out, View::rows_of(2)),
        );
    }
}
