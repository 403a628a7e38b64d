//! The portable kernel: scalar loops over the packed layout, on any CPU.

use super::{BLOCK_COLS, GROUP};

/// Sums of one packed column block for `m` rows of `u8` activations (`k_padded` each) into
/// columns `col0..col0 + 16` of `tile` (row-major, `width` wide).
pub(super) fn block(
    a: &[u8],
    m: usize,
    k_padded: usize,
    panel: &[i8],
    tile: &mut [i32],
    width: usize,
    col0: usize,
) {
    block_of(|i| i32::from(a[i]), m, k_padded, panel, tile, width, col0);
}

/// The same for activations already widened to `i16`.
pub(super) fn block_i16(
    a: &[i16],
    m: usize,
    k_padded: usize,
    panel: &[i8],
    tile: &mut [i32],
    width: usize,
    col0: usize,
) {
    block_of(|i| i32::from(a[i]), m, k_padded, panel, tile, width, col0);
}

#[inline(always)]
fn block_of(
    a: impl Fn(usize) -> i32,
    m: usize,
    k_padded: usize,
    panel: &[i8],
    tile: &mut [i32],
    width: usize,
    col0: usize,
) {
    for r in 0..m {
        let mut acc = [0i32; BLOCK_COLS];
        for g in 0..k_padded / GROUP {
            let weights = &panel[g * BLOCK_COLS * GROUP..(g + 1) * BLOCK_COLS * GROUP];
            for (c, sum) in acc.iter_mut().enumerate() {
                for lane in 0..GROUP {
                    *sum +=
                        a(r * k_padded + g * GROUP + lane) * i32::from(weights[c * GROUP + lane]);
                }
            }
        }
        tile[r * width + col0..r * width + col0 + BLOCK_COLS].copy_from_slice(&acc);
    }
}
