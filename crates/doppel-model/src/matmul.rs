//! Matrix products for the fused ops (`attention.rs`, `dense.rs`), through `gemm`, the crate
//! under burn's own CPU matmul, on matrices read in place: a head inside a projection, a
//! transpose, a batch of rows folded into one matrix. Nothing is copied to make an operand
//! contiguous.
//!
//! Large products run one band of output rows (or columns) a core, each band a
//! single-threaded `gemm` call; the inner dimension is never split, so the result does not
//! depend on the number of cores.
//!
//! Must never read or write outside the slices it is given: `product_with` checks the last
//! element each matrix will touch before handing raw pointers to `gemm`.

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
    [m, k, n]: [usize; 3],
    scale: f32,
    lhs: (&[f32], View),
    rhs: (&[f32], View),
    out: (&mut [f32], View),
    write: Write,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: gemm would not touch the operands, and their bounds are not defined.
        if write == Write::Overwrite {
            for i in 0..m {
                for j in 0..n {
                    out.0[out.1.offset + i * out.1.row_stride + j * out.1.column_stride] = 0.0;
                }
            }
        }
        return;
    }
    let last = |v: View, rows: usize, columns: usize| {
        v.offset + (rows - 1) * v.row_stride + (columns - 1) * v.column_stride
    };
    // The bounds `gemm` will touch, checked once here, as it reads raw pointers.
    assert!(
        last(lhs.1, m, k) < lhs.0.len()
            && last(rhs.1, k, n) < rhs.0.len()
            && last(out.1, m, n) < out.0.len(),
        "a product's operands lie outside their buffers"
    );
    let accumulate = write == Write::Accumulate;
    let out_ptr = SharedOut(out.0.as_mut_ptr());
    let run = |[i0, i1]: [usize; 2], [j0, j1]: [usize; 2]| {
        // SAFETY: the block [i0, i1) × [j0, j1) lies within the bounds checked above, and
        // the blocks given to different tasks are disjoint; `out` is borrowed mutably for
        // the whole call, so nothing else reads or writes it meanwhile.
        unsafe {
            block(
                [i1 - i0, k, j1 - j0],
                scale,
                lhs.0.as_ptr().add(lhs.1.offset + i0 * lhs.1.row_stride),
                lhs.1,
                rhs.0.as_ptr().add(rhs.1.offset + j0 * rhs.1.column_stride),
                rhs.1,
                out_ptr.at(out.1.offset + i0 * out.1.row_stride + j0 * out.1.column_stride),
                out.1,
                accumulate,
            )
        }
    };
    let tasks = rayon::current_num_threads();
    if !parallel || tasks < 2 || m.saturating_mul(k).saturating_mul(n) < PARALLEL_FROM {
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
        }
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
