//! Max pooling of `f32` planes on the host: burn's CPU backends compute max pooling as a 3-D
//! pooling that also records every maximum's index, which cost more in LeNet-5 than both of
//! its convolutions on integers (`cargo xtask bench kernels`, `pool` rows). Windows here lie
//! inside the image (no padding, no ceil mode, unit dilation), the case of every pooling layer
//! in the zoo; other pooling stays on burn's.
//!
//! Each output row takes the maximum of its window's rows in one contiguous pass, which the
//! compiler vectorizes, then of each window's columns. NaN wins, as it does in burn and
//! PyTorch, so that it reaches the output.

use rayon::prelude::*;

use crate::{KernelError, Result, check_len};

/// Input elements from which planes are split across rayon's threads.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// A max pooling's windows: size and step, rows then columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    /// Window rows and columns.
    pub kernel: [usize; 2],
    /// Steps between windows.
    pub stride: [usize; 2],
}

impl PoolShape {
    /// Output rows and columns for an `[height, width]` plane, or an error for a zero size or
    /// stride, or a window larger than the plane.
    pub fn output(&self, [height, width]: [usize; 2]) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for (axis, size) in [height, width].into_iter().enumerate() {
            let bad = |what: &'static str, value: usize| KernelError::Parameter {
                what,
                value: value.to_string(),
            };
            let (kernel, stride) = (self.kernel[axis], self.stride[axis]);
            if kernel == 0 {
                return Err(bad("pooling window size", 0));
            }
            if stride == 0 {
                return Err(bad("pooling stride", 0));
            }
            out[axis] = size
                .checked_sub(kernel)
                .ok_or(bad("pooling window size", kernel))?
                / stride
                + 1;
        }
        Ok(out)
    }
}

/// The maximum of each window of `planes` planes of `[height, width]` (row-major, one after
/// the other) into `out`, `[planes, oh, ow]`.
pub fn max_pool2d(
    x: &[f32],
    planes: usize,
    size: [usize; 2],
    shape: &PoolShape,
    out: &mut [f32],
) -> Result<()> {
    let [oh, ow] = shape.output(size)?;
    let plane = size[0] * size[1];
    check_len("pooling input", planes * plane, x.len())?;
    check_len("pooling output", planes * oh * ow, out.len())?;
    if out.is_empty() {
        return Ok(());
    }
    let one = |rows: &mut Vec<f32>, (x, out): (&[f32], &mut [f32])| {
        pool_plane(x, size, shape, [oh, ow], rows, out)
    };
    if x.len() >= PARALLEL_MIN_ELEMENTS {
        x.par_chunks(plane)
            .zip(out.par_chunks_mut(oh * ow))
            .for_each_init(Vec::new, one);
    } else {
        let mut rows = Vec::new();
        x.chunks(plane)
            .zip(out.chunks_mut(oh * ow))
            .for_each(|pair| one(&mut rows, pair));
    }
    Ok(())
}

/// NaN wins; otherwise the larger.
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

fn pool_plane(
    x: &[f32],
    [_, width]: [usize; 2],
    shape: &PoolShape,
    [oh, ow]: [usize; 2],
    rows: &mut Vec<f32>,
    out: &mut [f32],
) {
    let [kh, kw] = shape.kernel;
    let [sy, sx] = shape.stride;
    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate().take(oh) {
        let y0 = oy * sy;
        rows.clear();
        rows.extend_from_slice(&x[y0 * width..][..width]);
        for ky in 1..kh {
            for (m, &v) in rows.iter_mut().zip(&x[(y0 + ky) * width..][..width]) {
                *m = max_nan(*m, v);
            }
        }
        for (ox, o) in out_row.iter_mut().enumerate() {
            let window = &rows[ox * sx..][..kw];
            *o = window[1..].iter().fold(window[0], |m, &v| max_nan(m, v));
        }
    }
}

/// The plain window loop the kernel is tested against, in burn's order: each window's
/// elements row by row, a larger value or a NaN replacing the maximum so far.
pub fn reference_max_pool2d(
    x: &[f32],
    planes: usize,
    [height, width]: [usize; 2],
    shape: &PoolShape,
) -> Result<Vec<f32>> {
    let [oh, ow] = shape.output([height, width])?;
    let mut out = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut max = f32::NEG_INFINITY;
                for ky in 0..shape.kernel[0] {
                    for kx in 0..shape.kernel[1] {
                        let y = oy * shape.stride[0] + ky;
                        let v = x[(p * height + y) * width + ox * shape.stride[1] + kx];
                        if v > max || v.is_nan() {
                            max = v;
                        }
                    }
                }
                out.push(max);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_hand_computed_pooling() {
        // [[1, 5, 2, 0], [3, 4, -1, 8], [0, 0, 7, 6]] with 2x2 windows, stride 2 across and 1
        // down: rows 0-1 and 1-2.
        let x = [1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 8.0, 0.0, 0.0, 7.0, 6.0];
        let shape = PoolShape {
            kernel: [2, 2],
            stride: [1, 2],
        };
        let mut out = vec![0.0; 4];
        max_pool2d(&x, 1, [3, 4], &shape, &mut out).unwrap();
        assert_eq!(out, [5.0, 8.0, 4.0, 8.0]);
    }

    #[test]
    fn nan_reaches_the_output_and_bad_shapes_are_refused() {
        let x = [1.0, f32::NAN, 2.0, 3.0];
        let shape = PoolShape {
            kernel: [2, 2],
            stride: [2, 2],
        };
        let mut out = vec![0.0; 1];
        max_pool2d(&x, 1, [2, 2], &shape, &mut out).unwrap();
        assert!(out[0].is_nan());
        let too_big = PoolShape {
            kernel: [3, 1],
            ..shape
        };
        assert!(matches!(
            max_pool2d(&x, 1, [2, 2], &too_big, &mut out),
            Err(KernelError::Parameter { .. })
        ));
        assert!(matches!(
            max_pool2d(&x, 2, [2, 2], &shape, &mut out),
            Err(KernelError::Length { .. })
        ));
    }

    #[test]
    fn planes_split_across_threads_give_the_same_result() {
        let (planes, size) = (600, [28, 28]);
        let x: Vec<f32> = (0..planes * 784)
            .map(|i| ((i * 7919) % 1000) as f32)
            .collect();
        assert!(x.len() >= PARALLEL_MIN_ELEMENTS);
        let shape = PoolShape {
            kernel: [2, 2],
            stride: [2, 2],
        };
        let mut out = vec![0.0; planes * 196];
        max_pool2d(&x, planes, size, &shape, &mut out).unwrap();
        assert_eq!(out, reference_max_pool2d(&x, planes, size, &shape).unwrap());
    }

    proptest! {
        #[test]
        fn pooling_matches_the_window_loop(
            (planes, h, w, kh, kw, sy, sx) in
                (0..4usize, 1..12usize, 1..12usize, 1..4usize, 1..4usize, 1..4usize, 1..4usize),
            seed in any::<u64>(),
        ) {
            let shape = PoolShape { kernel: [kh, kw], stride: [sy, sx] };
            prop_assume!(shape.output([h, w]).is_ok());
            let x: Vec<f32> = (0..planes * h * w)
                .map(|i| (((i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 200)
                    as f32 - 100.0)
                .collect();
            let [oh, ow] = shape.output([h, w]).unwrap();
            let mut out = vec![0.0; planes * oh * ow];
            max_pool2d(&x, planes, [h, w], &shape, &mut out).unwrap();
            prop_assert_eq!(out, reference_max_pool2d(&x, planes, [h, w], &shape).unwrap());
        }
    }
}
