//! Pending mel frames in blocks of [`BLOCK`] frames: the layout the SIMD lanes write and the
//! layout in which a deferred feature is finished a block at a time, in L1.

use crate::features::Tile;
use crate::memory;

/// Frames per block of [`MelBlocks`]: a multiple of every ISA's lane count (4, 8, 16).
pub const BLOCK: usize = 16;

/// The pending mel frames of one channel, in blocks of [`BLOCK`] frames, each block `dim`
/// rows of `BLOCK` values: frame `f`'s value `d` is at `(f / BLOCK) * dim * BLOCK + d * BLOCK
/// + f % BLOCK`. A full 16-lane tile is one contiguous copy, and a block (8 KiB at 128 bands)
/// is finished (dB, DCT) while it sits in L1: see [`crate::Finalizer::finish_blocks`].
///
/// The buffer can be recycled between signals ([`Self::with_buffer`], [`Self::into_buffer`]):
/// no value of an earlier signal reaches a result (the lanes of a last, partial block are
/// computed on but never copied out), so a reused buffer skips the kernel's clearing of
/// fresh pages (about 10 ms per 100 MB).
#[derive(Debug)]
pub struct MelBlocks {
    values: Vec<f32>,
    dim: usize,
    fill: usize,
}

impl MelBlocks {
    /// Room for `frames` frames of `dim` values, in `buf` when it is long enough (its
    /// contents never reach a result), else in a fresh allocation.
    pub fn with_buffer(dim: usize, frames: usize, buf: Vec<f32>) -> MelBlocks {
        let need = Self::values_for(dim, frames);
        let values = if buf.len() >= need {
            buf
        } else {
            memory::zeroed(need)
        };
        MelBlocks {
            values,
            dim,
            fill: 0,
        }
    }

    /// Values a buffer needs for `frames` frames of `dim` values.
    pub fn values_for(dim: usize, frames: usize) -> usize {
        frames.div_ceil(BLOCK) * BLOCK * dim
    }

    /// Values per frame.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Frames stored.
    pub fn frames(&self) -> usize {
        self.fill
    }

    /// The buffer, for the next signal.
    pub fn into_buffer(self) -> Vec<f32> {
        self.values
    }

    /// Room for `more` frames after the stored ones (more than planned: never expected).
    fn reserve(&mut self, more: usize) {
        let need = Self::values_for(self.dim, self.fill + more);
        if need > self.values.len() {
            self.values.resize(need.max(2 * self.values.len()), 0.0);
        }
    }

    /// Appends one frame of `dim` values.
    ///
    /// # Panics
    /// If `values` is not `dim` long.
    pub fn push_frame(&mut self, values: &[f32]) {
        assert_eq!(values.len(), self.dim, "frame of {} values", self.dim);
        self.reserve(1);
        let (b, j) = (self.fill / BLOCK, self.fill % BLOCK);
        let block = &mut self.values[b * self.dim * BLOCK..][..self.dim * BLOCK];
        for (row, &v) in block.chunks_exact_mut(BLOCK).zip(values) {
            row[j] = v;
        }
        self.fill += 1;
    }

    /// Appends a tile's frames.
    ///
    /// # Panics
    /// If the tile's `dim` differs.
    pub fn push_tile(&mut self, tile: &Tile<'_>) {
        assert_eq!(tile.dim, self.dim, "tile of {} values per frame", self.dim);
        if tile.count == 0 {
            return;
        }
        self.reserve(tile.count);
        let (b, j) = (self.fill / BLOCK, self.fill % BLOCK);
        let block = &mut self.values[b * self.dim * BLOCK..][..self.dim * BLOCK];
        if j == 0 && tile.lanes == BLOCK && tile.count == BLOCK {
            block.copy_from_slice(&tile.values[..self.dim * BLOCK]);
        } else if j + tile.count <= BLOCK {
            for (dst, src) in block
                .chunks_exact_mut(BLOCK)
                .zip(tile.values.chunks_exact(tile.lanes))
            {
                dst[j..j + tile.count].copy_from_slice(&src[..tile.count]);
            }
        } else {
            let mut frame = vec![0.0; self.dim];
            for f in 0..tile.count {
                tile.frame_into(f, &mut frame);
                self.push_frame(&frame);
            }
            return;
        }
        self.fill += tile.count;
    }

    /// Block `b` (`dim` rows of [`BLOCK`]) and how many of its frames are stored.
    pub(crate) fn block_mut(&mut self, b: usize) -> (&mut [f32], usize) {
        let n = self.dim * BLOCK;
        let count = self.fill.saturating_sub(b * BLOCK).min(BLOCK);
        (&mut self.values[b * n..][..n], count)
    }

    /// Number of blocks holding frames.
    pub(crate) fn blocks(&self) -> usize {
        self.fill.div_ceil(BLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: usize, dim: usize) -> Vec<f32> {
        (0..dim).map(|d| (f * 1000 + d) as f32).collect()
    }

    #[test]
    fn tiles_and_frames_land_where_the_layout_says() {
        let dim = 5;
        // Lanes of 16, 8 and 4, a short last tile and single frames, in a recycled buffer
        // full of garbage.
        for lanes in [16usize, 8, 4] {
            let frames = 3 * lanes + 3 + 2;
            let mut b = MelBlocks::with_buffer(dim, frames, vec![f32::NAN; 1000]);
            let mut f = 0;
            for count in [lanes, lanes, lanes, 3] {
                let mut values = vec![f32::NAN; dim * lanes];
                for t in 0..count {
                    for (d, v) in frame(f + t, dim).into_iter().enumerate() {
                        values[d * lanes + t] = v;
                    }
                }
                b.push_tile(&Tile {
                    dim,
                    lanes,
                    count,
                    values: &values,
                });
                f += count;
            }
            b.push_frame(&frame(f, dim));
            b.push_frame(&frame(f + 1, dim));
            assert_eq!(b.frames(), frames);
            let v = b.into_buffer();
            for f in 0..frames {
                for (d, want) in frame(f, dim).into_iter().enumerate() {
                    assert_eq!(v[(f / BLOCK) * dim * BLOCK + d * BLOCK + f % BLOCK], want);
                }
            }
        }
    }

    #[test]
    fn more_frames_than_planned_grow_the_buffer() {
        let mut b = MelBlocks::with_buffer(3, 1, Vec::new());
        for f in 0..40 {
            b.push_frame(&frame(f, 3));
        }
        assert_eq!(b.frames(), 40);
        let (block, count) = b.block_mut(2);
        assert_eq!(count, 8);
        assert_eq!(block[BLOCK + 7], frame(39, 3)[1]);
    }
}
