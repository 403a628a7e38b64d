//! 2-D convolution on the integer GEMM: each image's windows unfolded into rows of
//! `channels · kh · kw` integers (im2col), a band of rows at a time so that the rows and their
//! sums stay in cache, multiplied by the `[out, in · kh · kw]` weight, and finished straight
//! into the `[out, h, w]` layout burn's tensors have: no unfolded image, no product matrix and
//! no transposed copy is ever made whole.
//!
//! The padding holds the activation's zero point, the integer of 0.0, so that it adds nothing
//! to any exact sum `Σ (a - za)(w - zw)`, as zeros do in float.

use rayon::prelude::*;

use super::{
    Activations, BAND_ROWS, BLOCK_COLS, Epilogue, Finish, Int8Kernel, PARALLEL_MIN_MACS,
    PackedWeights, RowScratch, SPAN_BLOCKS, check_activation, pack_rows, sums,
};
use crate::{KernelError, Result, check_len};

/// The geometry of a convolution over one group: the input's channels and size, the filter's
/// size, and the stride, dilation and padding, as burn's `Conv2d` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub channels: usize,
    /// Input rows.
    pub height: usize,
    /// Input columns.
    pub width: usize,
    /// Filter rows and columns.
    pub kernel: [usize; 2],
    /// Steps between windows, rows then columns.
    pub stride: [usize; 2],
    /// Steps between a window's taps, rows then columns.
    pub dilation: [usize; 2],
    /// `(before, after)` rows, then columns.
    pub padding: [(usize, usize); 2],
}

impl ConvShape {
    /// Integers per unfolded row: `channels · kh · kw`, the packed weight's depth.
    pub fn depth(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Output rows and columns, or an error for a zero stride, dilation or filter size, or a
    /// filter wider than the padded input.
    pub fn output(&self) -> Result<[usize; 2]> {
        let size = [self.height, self.width];
        let mut out = [0; 2];
        for axis in 0..2 {
            let bad = |what: &'static str, value: usize| KernelError::Parameter {
                what,
                value: value.to_string(),
            };
            if self.kernel[axis] == 0 {
                return Err(bad("convolution filter size", 0));
            }
            if self.stride[axis] == 0 {
                return Err(bad("convolution stride", 0));
            }
            if self.dilation[axis] == 0 {
                return Err(bad("convolution dilation", 0));
            }
            let (before, after) = self.padding[axis];
            let span = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            let padded = size[axis] + before + after;
            out[axis] = padded
                .checked_sub(span)
                .ok_or(bad("convolution filter span", span))?
                / self.stride[axis]
                + 1;
        }
        Ok(out)
    }

    fn padded(&self) -> [usize; 2] {
        let [(top, bottom), (left, right)] = self.padding;
        [self.height + top + bottom, self.width + left + right]
    }
}

/// `out = dequantize(conv(images, w)) + bias` (then ReLU): `images` is `[batch, channels,
/// height, width]` of `u8` with one scale and zero point (its `rows` the batch, its `stride`
/// one image), `w` the packed `[out, channels · kh · kw]` weight, `out` `[batch, out, oh, ow]`.
/// Images are split across rayon's threads when the batch is large enough; each output is
/// computed the same way on any thread, so the result does not depend on the thread count.
pub fn conv2d(
    kernel: Int8Kernel,
    images: Activations<'_>,
    shape: &ConvShape,
    w: &PackedWeights,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) -> Result<()> {
    let [oh, ow] = shape.output()?;
    check_len("convolution depth", w.k, shape.depth())?;
    let image_len = shape.channels * shape.height * shape.width;
    check_len("image length", image_len, images.stride)?;
    check_len("images", images.rows * image_len, images.values.len())?;
    let (n, positions) = (w.n, oh * ow);
    check_len("output", images.rows * n * positions, out.len())?;
    if let Some(bias) = epilogue.bias {
        check_len("bias", n, bias.len())?;
    }
    check_activation(images.scale, images.zero_point)?;
    if out.is_empty() {
        return Ok(());
    }
    let job = Job {
        kernel,
        shape,
        out_size: [oh, ow],
        w,
        finish: Finish::new(w, images.scale, images.zero_point, epilogue),
        // Checked to be in 0..=255 above.
        zero: images.zero_point as u8,
        taps: filter_rows(shape),
        // Only weights with a zero point need the rows' sums (Ember's are symmetric).
        row_sums: w.has_zero_points(),
    };
    let (image_len, out_len) = (image_len.max(1), n * positions);
    if images.rows > 1 && images.rows * positions * w.k * n >= PARALLEL_MIN_MACS {
        images
            .values
            .par_chunks(image_len)
            .zip(out.par_chunks_mut(out_len))
            .for_each_init(Scratch::default, |scratch, (image, out)| {
                job.image(image, scratch, out)
            });
    } else {
        let mut scratch = Scratch::default();
        for (image, out) in images.values.chunks(image_len).zip(out.chunks_mut(out_len)) {
            job.image(image, &mut scratch, out);
        }
    }
    Ok(())
}

/// Buffers reused from one image to the next on a thread.
#[derive(Default)]
struct Scratch {
    /// The image with its padding filled in.
    padded: Vec<u8>,
    /// One band of unfolded rows, `k_padded` apart; the tail of each row stays 0.
    band: Vec<u8>,
    tile: Vec<i32>,
    row_sums: Vec<i32>,
    /// The band as the kernel reads it, where it cannot read it in place.
    rows: RowScratch,
}

struct Job<'a> {
    kernel: Int8Kernel,
    shape: &'a ConvShape,
    out_size: [usize; 2],
    w: &'a PackedWeights,
    finish: Finish<'a>,
    /// What the padding holds.
    zero: u8,
    /// Where each filter row `(channel, ky)` of a window starts in the padded image, from the
    /// window's first tap.
    taps: Vec<usize>,
    /// Whether the epilogue needs each unfolded row's sum.
    row_sums: bool,
}

impl Job<'_> {
    /// One image into its `[out, oh · ow]` output.
    fn image(&self, image: &[u8], scratch: &mut Scratch, out: &mut [f32]) {
        let shape = self.shape;
        let [hp, wp] = shape.padded();
        let [(top, _), (left, _)] = shape.padding;
        let plane = hp * wp;
        let padded: &[u8] = if hp == shape.height && wp == shape.width {
            image
        } else {
            scratch.padded.clear();
            scratch.padded.resize(shape.channels * plane, self.zero);
            for c in 0..shape.channels {
                for y in 0..shape.height {
                    let source = &image[(c * shape.height + y) * shape.width..][..shape.width];
                    let at = c * plane + (y + top) * wp + left;
                    scratch.padded[at..at + shape.width].copy_from_slice(source);
                }
            }
            &scratch.padded
        };
        let (k, k_padded) = (self.w.k, self.w.k_padded);
        let positions = self.out_size[0] * self.out_size[1];
        let blocks = self.w.blocks();
        for r0 in (0..positions).step_by(BAND_ROWS) {
            let m = (positions - r0).min(BAND_ROWS);
            // Zeroed when the buffer grows; the row tails past `k` are never written after.
            if scratch.band.len() < m * k_padded {
                scratch.band = vec![0; BAND_ROWS * k_padded];
            }
            let band = &mut scratch.band[..m * k_padded];
            self.unfold(padded, r0..r0 + m, band);
            scratch.row_sums.clear();
            if self.row_sums {
                scratch.row_sums.extend(
                    band.chunks_exact(k_padded)
                        .map(|row| row.iter().map(|&v| i32::from(v)).sum::<i32>()),
                );
            } else {
                scratch.row_sums.resize(m, 0);
            }
            let rows = pack_rows(
                self.kernel,
                band,
                m,
                k_padded,
                k,
                k_padded,
                &mut scratch.rows,
            );
            for start in (0..blocks).step_by(SPAN_BLOCKS) {
                let span = start..(start + SPAN_BLOCKS).min(blocks);
                let width = span.len() * BLOCK_COLS;
                scratch.tile.resize(m * width, 0);
                let tile = &mut scratch.tile[..m * width];
                sums(self.kernel, rows, m, self.w, span.clone(), tile);
                self.finish.write_planes(
                    self.kernel,
                    tile,
                    span,
                    out,
                    positions,
                    r0,
                    &scratch.row_sums,
                );
            }
        }
    }

    /// The windows of output positions `rows` (row-major over the output) of the padded image,
    /// each `k_padded` apart in `band`, in the weight's `(channel, ky, kx)` order.
    fn unfold(&self, padded: &[u8], rows: std::ops::Range<usize>, band: &mut [u8]) {
        let shape = self.shape;
        let kw = shape.kernel[1];
        let wp = shape.padded()[1];
        let windows = Windows {
            padded,
            taps: &self.taps,
            out_width: self.out_size[1],
            stride: [shape.stride[0] * wp, shape.stride[1]],
            k_padded: self.w.k_padded,
        };
        // The common filter widths get a copy whose length the compiler knows (one or two
        // moves, where a call to `memcpy` for 5 bytes cost more than the product in a
        // development profile of LeNet-5's first layer).
        match (kw, shape.dilation[1]) {
            (1, _) => windows.fill::<1>(rows, band),
            (2, 1) => windows.fill::<2>(rows, band),
            (3, 1) => windows.fill::<3>(rows, band),
            (4, 1) => windows.fill::<4>(rows, band),
            (5, 1) => windows.fill::<5>(rows, band),
            (7, 1) => windows.fill::<7>(rows, band),
            (_, dx) => windows.fill_any(rows, band, kw, dx),
        }
    }
}

/// The offsets of [`Job::taps`].
fn filter_rows(shape: &ConvShape) -> Vec<usize> {
    let [hp, wp] = shape.padded();
    let (kh, dy) = (shape.kernel[0], shape.dilation[0]);
    (0..shape.channels)
        .flat_map(|c| (0..kh).map(move |ky| (c * hp + ky * dy) * wp))
        .collect()
}

/// Windows of a padded image, read into unfolded rows.
struct Windows<'a> {
    padded: &'a [u8],
    /// Offset of each filter row from the window's first tap.
    taps: &'a [usize],
    out_width: usize,
    /// Offsets from one window to the next: a row of outputs down, one output across.
    stride: [usize; 2],
    k_padded: usize,
}

impl Windows<'_> {
    /// The first tap of each window of output positions `rows`, in order: counted along the
    /// output rows, since a division per position cost as much as its copies.
    fn origins(&self, rows: std::ops::Range<usize>) -> impl Iterator<Item = usize> + '_ {
        let (mut oy, mut ox) = (rows.start / self.out_width, rows.start % self.out_width);
        rows.map(move |_| {
            let origin = oy * self.stride[0] + ox * self.stride[1];
            ox += 1;
            if ox == self.out_width {
                (oy, ox) = (oy + 1, 0);
            }
            origin
        })
    }

    /// Filter rows of `KW` contiguous taps.
    fn fill<const KW: usize>(&self, rows: std::ops::Range<usize>, band: &mut [u8]) {
        for (origin, row) in self.origins(rows).zip(band.chunks_exact_mut(self.k_padded)) {
            for (dst, &tap) in row.chunks_exact_mut(KW).zip(self.taps) {
                let src: &[u8; KW] = self.padded[origin + tap..][..KW]
                    .try_into()
                    .expect("KW taps");
                let dst: &mut [u8; KW] = dst.try_into().expect("KW taps");
                *dst = *src;
            }
        }
    }

    /// Filter rows of `kw` taps `dx` apart.
    fn fill_any(&self, rows: std::ops::Range<usize>, band: &mut [u8], kw: usize, dx: usize) {
        for (origin, row) in self.origins(rows).zip(band.chunks_exact_mut(self.k_padded)) {
            for (dst, &tap) in row.chunks_exact_mut(kw).zip(self.taps) {
                for (kx, d) in dst.iter_mut().enumerate() {
                    *d = self.padded[origin + tap + kx * dx];
                }
            }
        }
    }
}

/// The plain loops every kernel's convolution is tested against: the exact `Σ (a - za) ·
/// (w - zw)` of each output, `[batch, n, oh, ow]`, for `w` `[n, channels, kh, kw]` and `u8`
/// images whose padding is `za`.
pub fn reference_conv_sums(
    images: &[u8],
    batch: usize,
    shape: &ConvShape,
    w: &[i8],
    n: usize,
    (zero_point, weight_zero_point): (i32, i32),
) -> Result<Vec<i32>> {
    let [oh, ow] = shape.output()?;
    let [kh, kw] = shape.kernel;
    let (c_in, h, wd) = (shape.channels, shape.height, shape.width);
    let [(top, _), (left, _)] = shape.padding;
    let mut out = vec![0i32; batch * n * oh * ow];
    for b in 0..batch {
        for o in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0i32;
                    for c in 0..c_in {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * shape.stride[0] + ky * shape.dilation[0])
                                    .checked_sub(top)
                                    .filter(|&y| y < h);
                                let x = (ox * shape.stride[1] + kx * shape.dilation[1])
                                    .checked_sub(left)
                                    .filter(|&x| x < wd);
                                let a = match (y, x) {
                                    (Some(y), Some(x)) => {
                                        i32::from(images[((b * c_in + c) * h + y) * wd + x])
                                    }
                                    _ => zero_point,
                                };
                                let weight = w[((o * c_in + c) * kh + ky) * kw + kx];
                                sum += (a - zero_point) * (i32::from(weight) - weight_zero_point);
                            }
                        }
                    }
                    out[((b * n + o) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
    Ok(out)
}
