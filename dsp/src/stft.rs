//! Short-time Fourier transform: framing with centre padding, windowing, real FFT, and the
//! reduction of each complex spectrum to power or magnitude.
//!
//! [`StftPlan`] holds the window and the FFT plan for one size; [`Framer`] turns a signal
//! arriving in blocks into the exact frames librosa's `stft` sees (centre padding included),
//! keeping only about one frame of samples in memory.

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{invalid, DspError};
use crate::kernels::Kernels;
use crate::window::{window, WindowKind};

/// How the signal is padded when `center` is on (numpy's `np.pad` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (librosa's default since 0.10).
    Constant,
    /// Mirror without repeating the edge sample.
    Reflect,
    /// Repeat the edge sample (librosa's `zero_crossing_rate` pads this way).
    Edge,
}

impl PadMode {
    /// Parses `constant` or `reflect`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "constant" => Some(PadMode::Constant),
            "reflect" => Some(PadMode::Reflect),
            "edge" => Some(PadMode::Edge),
            _ => None,
        }
    }
}

/// What one STFT frame is reduced to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpectrumKind {
    /// `|X|^2`.
    Power,
    /// `|X|`.
    Magnitude,
}

/// STFT parameters; defaults are librosa's (`n_fft` 2048, hop 512, Hann, centre, constant pad).
#[derive(Debug, Clone, PartialEq)]
pub struct StftConfig {
    /// FFT length in samples. Default 2048.
    pub n_fft: usize,
    /// Samples between frame starts. Default 512.
    pub hop_length: usize,
    /// Window length, at most `n_fft`; the window is centred in the frame. Default `n_fft`.
    pub win_length: usize,
    /// Window shape. Default Hann.
    pub window: WindowKind,
    /// Pad `n_fft / 2` samples on both sides so frame `t` is centred at `t * hop`. Default on.
    pub center: bool,
    /// Padding used when `center` is on. Default constant (zeros).
    pub pad_mode: PadMode,
}

impl Default for StftConfig {
    fn default() -> Self {
        StftConfig {
            n_fft: 2048,
            hop_length: 512,
            win_length: 2048,
            window: WindowKind::Hann,
            center: true,
            pad_mode: PadMode::Constant,
        }
    }
}

impl StftConfig {
    /// Number of frequency bins, `1 + n_fft / 2`.
    pub fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Number of frames librosa returns for a signal of `n_samples`.
    pub fn n_frames(&self, n_samples: u64) -> u64 {
        let n_fft = self.n_fft as u64;
        let padded = if self.center {
            n_samples + 2 * (n_fft / 2)
        } else {
            n_samples
        };
        if padded < n_fft || n_samples == 0 {
            0
        } else {
            1 + (padded - n_fft) / self.hop_length as u64
        }
    }

    fn validate(&self) -> Result<(), DspError> {
        if self.n_fft < 2 || self.n_fft > 1 << 20 {
            return Err(invalid(
                "n_fft",
                format!("{} is not in 2..=1048576", self.n_fft),
            ));
        }
        if self.hop_length == 0 || self.hop_length > 1 << 20 {
            return Err(invalid(
                "hop_length",
                format!("{} is not in 1..=1048576", self.hop_length),
            ));
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return Err(invalid(
                "win_length",
                format!("{} is not in 1..=n_fft ({})", self.win_length, self.n_fft),
            ));
        }
        Ok(())
    }
}

/// Precomputed window and FFT plan for one [`StftConfig`].
pub struct StftPlan {
    cfg: StftConfig,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    k: Kernels,
}

impl std::fmt::Debug for StftPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StftPlan").field("cfg", &self.cfg).finish()
    }
}

/// Per-worker buffers for [`StftPlan::spectrum`].
pub struct StftScratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex32>,
    fft: Vec<Complex32>,
}

impl StftPlan {
    /// Validates `cfg` and plans the FFT.
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key that is out of range.
    pub fn new(cfg: &StftConfig) -> Result<Self, DspError> {
        Self::with_kernels(cfg, Kernels::active())
    }

    /// As [`Self::new`], with the given kernels (tests and benches compare ISAs this way).
    ///
    /// # Errors
    /// [`DspError::InvalidConfig`] naming the key that is out of range.
    pub fn with_kernels(cfg: &StftConfig, k: Kernels) -> Result<Self, DspError> {
        cfg.validate()?;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(cfg.n_fft);
        Ok(StftPlan {
            window: window(cfg.window, cfg.win_length, cfg.n_fft),
            cfg: cfg.clone(),
            fft,
            k,
        })
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &StftConfig {
        &self.cfg
    }

    /// The window, `n_fft` values (zero-padded around a shorter `win_length`).
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// Buffers sized for this plan.
    pub fn make_scratch(&self) -> StftScratch {
        StftScratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
        }
    }

    /// Windows one frame of `n_fft` samples and transforms it into the scratch's complex
    /// spectrum; [`Self::reduce`] then reads it out (once per reduction, one FFT).
    ///
    /// # Panics
    /// If `frame.len() != n_fft`.
    pub fn transform(&self, frame: &[f32], s: &mut StftScratch) {
        assert_eq!(frame.len(), self.cfg.n_fft);
        self.k.mul(frame, &self.window, &mut s.frame);
        self.fft
            .process_with_scratch(&mut s.frame, &mut s.spectrum, &mut s.fft)
            .expect("buffer sizes come from the plan");
    }

    /// The complex spectrum of the last [`Self::transform`], `n_bins` values.
    pub fn complex<'s>(&self, s: &'s StftScratch) -> &'s [Complex32] {
        &s.spectrum
    }

    /// Writes `n_bins` values of the chosen reduction of the last [`Self::transform`].
    ///
    /// # Panics
    /// If `out.len() != n_bins`.
    pub fn reduce(&self, kind: SpectrumKind, s: &StftScratch, out: &mut [f32]) {
        assert_eq!(out.len(), self.cfg.n_bins());
        // Complex32 is repr(C) {re, im}: view the spectrum as interleaved f32.
        let c: &[f32] = complex_as_f32(&s.spectrum);
        match kind {
            SpectrumKind::Power => self.k.power(c, out),
            SpectrumKind::Magnitude => self.k.magnitude(c, out),
        }
    }

    /// [`Self::transform`] then [`Self::reduce`].
    ///
    /// # Panics
    /// If `frame.len() != n_fft` or `out.len() != n_bins`.
    pub fn spectrum(
        &self,
        frame: &[f32],
        kind: SpectrumKind,
        out: &mut [f32],
        s: &mut StftScratch,
    ) {
        self.transform(frame, s);
        self.reduce(kind, s, out);
    }
}

/// Views complex values as interleaved `[re, im, ...]`.
pub(crate) fn complex_as_f32(c: &[Complex32]) -> &[f32] {
    // Safety: num_complex::Complex<f32> is #[repr(C)] with fields re, im (two f32, no padding).
    unsafe { std::slice::from_raw_parts(c.as_ptr().cast::<f32>(), c.len() * 2) }
}

/// numpy's `reflect` index for position `i` (may be negative or past the end) in a signal of
/// `n > 0` samples.
fn reflect_index(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let mut j = i.rem_euclid(period);
    if j >= n as i64 {
        j = period - j;
    }
    j as usize
}

/// Cuts a signal that arrives in blocks into the frames of the padded signal.
///
/// Frame `t` covers padded samples `[t * hop, t * hop + n_fft)`. The framer keeps only the
/// samples that a future frame (or the right-hand reflect padding) still needs.
#[derive(Debug, Clone)]
pub struct Framer {
    n_fft: usize,
    hop: usize,
    center: bool,
    pad_mode: PadMode,
    /// Samples of the padded signal starting at padded position `buf_start`.
    buf: Vec<f32>,
    buf_start: u64,
    /// Raw samples held back until the left padding can be built.
    head: Vec<f32>,
    left_done: bool,
    n_in: u64,
    next_frame: u64,
    finished: bool,
}

impl Framer {
    /// A framer for the framing in `cfg`.
    pub fn new(cfg: &StftConfig) -> Self {
        Framer {
            n_fft: cfg.n_fft,
            hop: cfg.hop_length,
            center: cfg.center,
            pad_mode: cfg.pad_mode,
            buf: Vec::with_capacity(2 * cfg.n_fft),
            buf_start: 0,
            head: Vec::new(),
            left_done: !cfg.center,
            n_in: 0,
            next_frame: 0,
            finished: false,
        }
    }

    fn pad(&self) -> usize {
        if self.center {
            self.n_fft / 2
        } else {
            0
        }
    }

    /// Samples received so far.
    pub fn samples_in(&self) -> u64 {
        self.n_in
    }

    /// Frames emitted so far.
    pub fn frames_out(&self) -> u64 {
        self.next_frame
    }

    /// Appends samples and calls `on_frame` for every frame that is now complete.
    pub fn push(&mut self, samples: &[f32], mut on_frame: impl FnMut(&[f32])) {
        self.push_groups(samples, 1, |frames, _| on_frame(frames));
    }

    /// As [`Self::push`], `group` frames at a time: `on_group(samples, count)` gets the
    /// padded signal from the first frame's start, `(count - 1) * hop + n_fft` values, so
    /// frame `f` is `samples[f * hop..][..n_fft]`. Only full groups are emitted here; the
    /// last, shorter one comes from [`Self::finish_groups`].
    pub fn push_groups(
        &mut self,
        samples: &[f32],
        group: usize,
        mut on_group: impl FnMut(&[f32], usize),
    ) {
        debug_assert!(!self.finished, "push after finish");
        let group = group.max(1);
        self.n_in += samples.len() as u64;
        if !self.left_done {
            self.head.extend_from_slice(samples);
            let pad = self.pad();
            if self.head.len() > pad {
                self.emit_left_pad();
            }
            self.emit_ready(group, false, &mut on_group);
            return;
        }
        // Groups that start in what is buffered need at most `n_fft + group * hop` samples of
        // the block; those go into the buffer, and the groups after them are read from the
        // block itself (no copy of the signal: a memmove of every sample cost as much as the
        // mel bands at 44.1 kHz).
        let prefix = (self.n_fft + group * self.hop).min(samples.len());
        self.buf.extend_from_slice(&samples[..prefix]);
        if prefix == samples.len() {
            self.emit_ready(group, false, &mut on_group);
            return;
        }
        let block_start = self.buf_start + (self.buf.len() - prefix) as u64;
        let (hop, n_fft) = (self.hop, self.n_fft);
        // Every group starting before the block is complete within the prefix.
        emit_groups(
            (&self.buf, self.buf_start),
            (hop, n_fft, group, false),
            Some(block_start),
            &mut self.next_frame,
            &mut on_group,
        );
        emit_groups(
            (samples, block_start),
            (hop, n_fft, group, false),
            None,
            &mut self.next_frame,
            &mut on_group,
        );
        // `samples.len() > prefix >= n_fft > pad`: what is kept lies in the block.
        let keep_from = self.keep_from(block_start + samples.len() as u64);
        self.buf.clear();
        self.buf
            .extend_from_slice(&samples[(keep_from - block_start) as usize..]);
        self.buf_start = keep_from;
    }

    /// The first padded position to keep when the signal so far ends at `end`: what the next
    /// frame needs, and `pad + 1` trailing samples for reflect padding at the end.
    fn keep_from(&self, end: u64) -> u64 {
        (self.next_frame * self.hop as u64).min(end.saturating_sub(self.pad() as u64 + 1))
    }

    fn emit_left_pad(&mut self) {
        let pad = self.pad();
        let head = std::mem::take(&mut self.head);
        match self.pad_mode {
            PadMode::Constant => self.buf.extend(std::iter::repeat_n(0.0, pad)),
            PadMode::Reflect => {
                for k in (1..=pad).rev() {
                    self.buf.push(head[reflect_index(k as i64, head.len())]);
                }
            }
            PadMode::Edge => self.buf.extend(std::iter::repeat_n(head[0], pad)),
        }
        self.buf.extend_from_slice(&head);
        self.left_done = true;
    }

    /// Emits groups of `group` complete frames; at the end of the signal (`last`) also the
    /// remaining, shorter group.
    fn emit_ready(&mut self, group: usize, last: bool, on_group: &mut impl FnMut(&[f32], usize)) {
        emit_groups(
            (&self.buf, self.buf_start),
            (self.hop, self.n_fft, group, last),
            None,
            &mut self.next_frame,
            on_group,
        );
        let keep_from = self.keep_from(self.buf_start + self.buf.len() as u64);
        if keep_from > self.buf_start {
            let drop = ((keep_from - self.buf_start) as usize).min(self.buf.len());
            if drop >= self.n_fft.max(4096) || drop == self.buf.len() {
                self.buf.drain(..drop);
                self.buf_start += drop as u64;
            }
        }
    }

    /// Ends the signal: pads the right-hand side and emits the remaining frames.
    ///
    /// Returns the total number of frames, which equals `StftConfig::n_frames(samples_in)`.
    pub fn finish(&mut self, mut on_frame: impl FnMut(&[f32])) -> u64 {
        self.finish_groups(1, |frames, _| on_frame(frames))
    }

    /// As [`Self::finish`], in groups as [`Self::push_groups`] (the last group may be
    /// shorter).
    pub fn finish_groups(&mut self, group: usize, mut on_group: impl FnMut(&[f32], usize)) -> u64 {
        if self.finished {
            return self.next_frame;
        }
        self.finished = true;
        let pad = self.pad();
        if self.n_in == 0 {
            return 0;
        }
        if !self.left_done {
            // The whole signal is shorter than the padding: pad it in one go.
            let head = std::mem::take(&mut self.head);
            let n = head.len();
            for i in -(pad as i64)..(n + pad) as i64 {
                let v = match self.pad_mode {
                    PadMode::Constant if i < 0 || i >= n as i64 => 0.0,
                    PadMode::Edge => head[i.clamp(0, n as i64 - 1) as usize],
                    _ => head[reflect_index(i, n)],
                };
                self.buf.push(v);
            }
            self.left_done = true;
        } else if pad > 0 {
            let n = self.n_in;
            match self.pad_mode {
                PadMode::Constant => self.buf.extend(std::iter::repeat_n(0.0, pad)),
                PadMode::Edge => {
                    let last = self.buf[self.buf.len() - 1];
                    self.buf.extend(std::iter::repeat_n(last, pad));
                }
                PadMode::Reflect => {
                    // Padded index of raw sample j is j + pad.
                    for k in 1..=pad as u64 {
                        let j = reflect_index((n - 1 + k) as i64, n as usize) as u64;
                        let pos = (j + pad as u64 - self.buf_start) as usize;
                        let v = self.buf[pos];
                        self.buf.push(v);
                    }
                }
            }
        }
        self.emit_ready(group.max(1), true, &mut on_group);
        self.next_frame
    }
}

/// Emits the groups of frames that lie whole in `src` (the padded signal from position
/// `src_start`), from frame `next` on, as long as a group's first frame starts before
/// `before` (when given); only full groups of `group` frames unless `last`.
fn emit_groups(
    (src, src_start): (&[f32], u64),
    (hop, n_fft, group, last): (usize, usize, usize, bool),
    before: Option<u64>,
    next: &mut u64,
    on_group: &mut impl FnMut(&[f32], usize),
) {
    let (hop, n_fft, group) = (hop as u64, n_fft as u64, group as u64);
    let end = src_start + src.len() as u64;
    loop {
        let start = *next * hop;
        if start + n_fft > end || before.is_some_and(|b| start >= b) {
            break;
        }
        let ready = 1 + (end - start - n_fft) / hop;
        let count = ready.min(group);
        if count < group && !last {
            break;
        }
        let off = (start - src_start) as usize;
        let len = ((count - 1) * hop + n_fft) as usize;
        on_group(&src[off..off + len], count as usize);
        *next += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole_signal_frames(cfg: &StftConfig, x: &[f32]) -> Vec<Vec<f32>> {
        let pad = if cfg.center { cfg.n_fft / 2 } else { 0 };
        let n = x.len();
        let padded: Vec<f32> = (-(pad as i64)..(n + pad) as i64)
            .map(|i| {
                if i >= 0 && (i as usize) < n {
                    x[i as usize]
                } else if cfg.pad_mode == PadMode::Constant {
                    0.0
                } else if cfg.pad_mode == PadMode::Edge {
                    x[i.clamp(0, n as i64 - 1) as usize]
                } else {
                    x[reflect_index(i, n)]
                }
            })
            .collect();
        let n_frames = cfg.n_frames(n as u64) as usize;
        (0..n_frames)
            .map(|t| padded[t * cfg.hop_length..t * cfg.hop_length + cfg.n_fft].to_vec())
            .collect()
    }

    /// The frames a framer emits for `blocks` pushed in turn, `group` at a time (each group's
    /// length checked), and the count `finish_groups` returns.
    fn grouped_frames<'a>(
        cfg: &StftConfig,
        blocks: impl Iterator<Item = &'a [f32]>,
        group: usize,
    ) -> (u64, Vec<Vec<f32>>) {
        let (hop, n_fft) = (cfg.hop_length, cfg.n_fft);
        let mut f = Framer::new(cfg);
        let mut got = Vec::new();
        let mut take = |s: &[f32], count: usize| {
            assert_eq!(s.len(), (count - 1) * hop + n_fft);
            for t in 0..count {
                got.push(s[t * hop..][..n_fft].to_vec());
            }
        };
        for block in blocks {
            f.push_groups(block, group, &mut take);
        }
        let n = f.finish_groups(group, &mut take);
        (n, got)
    }

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 5, mode='reflect') -> [1 2 3 2 1 | 0 1 2 3 | 2 1 0 1 2]
        let got: Vec<usize> = (-5..9).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, vec![1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
    }

    #[test]
    fn streamed_frames_equal_whole_signal_frames_for_any_block_size() {
        let x: Vec<f32> = (0..50_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        for &(n_fft, hop) in &[(16usize, 4usize), (400, 160), (64, 100), (2048, 512)] {
            for &center in &[true, false] {
                for &pad_mode in &[PadMode::Constant, PadMode::Reflect, PadMode::Edge] {
                    for &len in &[1usize, 3, 9, 40, 401, 5000, 50_000] {
                        let cfg = StftConfig {
                            n_fft,
                            hop_length: hop,
                            win_length: n_fft,
                            center,
                            pad_mode,
                            ..StftConfig::default()
                        };
                        let want = whole_signal_frames(&cfg, &x[..len]);
                        for &block in &[1usize, 7, 333, 10_000, 65_536] {
                            if len == 50_000 && block < 333 {
                                continue;
                            }
                            // Groups of 1 (the per-frame path) and of lanes, as the lane FFT
                            // takes them: blocks longer than `n_fft + group * hop` are read
                            // in place, shorter ones through the buffer.
                            for group in [1usize, 4, 16] {
                                let (n, got) = grouped_frames(&cfg, x[..len].chunks(block), group);
                                assert_eq!(n as usize, want.len());
                                assert!(
                                    got == want,
                                    "n_fft {n_fft} hop {hop} center {center} {pad_mode:?} \
                                     len {len} block {block} group {group}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Long and tiny blocks in one stream: the framer switches between reading the block in
    /// place and buffering it, and the frames stay those of the whole signal.
    #[test]
    fn mixed_block_sizes_give_the_whole_signals_frames() {
        let x: Vec<f32> = (0..100_000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let sizes = [20_000usize, 1, 7, 12_345, 3, 2_000, 65_536];
        for &(n_fft, hop) in &[(400usize, 160usize), (2048, 512), (64, 100)] {
            for center in [true, false] {
                let cfg = StftConfig {
                    n_fft,
                    hop_length: hop,
                    win_length: n_fft,
                    center,
                    pad_mode: PadMode::Reflect,
                    ..StftConfig::default()
                };
                let want = whole_signal_frames(&cfg, &x);
                for group in [1usize, 16] {
                    let mut blocks = Vec::new();
                    let (mut at, mut i) = (0, 0);
                    while at < x.len() {
                        let end = (at + sizes[i % sizes.len()]).min(x.len());
                        blocks.push(&x[at..end]);
                        (at, i) = (end, i + 1);
                    }
                    let (_, got) = grouped_frames(&cfg, blocks.into_iter(), group);
                    assert!(
                        got == want,
                        "n_fft {n_fft} hop {hop} center {center} group {group}"
                    );
                }
            }
        }
    }

    #[test]
    fn spectrum_matches_direct_dft() {
        let cfg = StftConfig {
            n_fft: 64,
            hop_length: 16,
            win_length: 48,
            ..StftConfig::default()
        };
        let plan = StftPlan::new(&cfg).unwrap();
        let mut s = plan.make_scratch();
        // Seeded LCG input.
        let mut state = 12345u64;
        let frame: Vec<f32> = (0..64)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
            })
            .collect();
        let w = window(WindowKind::Hann, 48, 64);
        let mut out = vec![0.0; cfg.n_bins()];
        // Dirty output buffer must not matter.
        out.iter_mut().for_each(|v| *v = f32::NAN);
        plan.spectrum(&frame, SpectrumKind::Power, &mut out, &mut s);
        for (k, &got) in out.iter().enumerate() {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for n in 0..64 {
                let x = frame[n] as f64 * w[n] as f64;
                let ph = -2.0 * std::f64::consts::PI * (k * n) as f64 / 64.0;
                re += x * ph.cos();
                im += x * ph.sin();
            }
            let want = re * re + im * im;
            assert!(
                (got as f64 - want).abs() <= 1e-5 * (1.0 + want),
                "bin {k}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn bad_config_names_the_key() {
        let cfg = StftConfig {
            win_length: 4096,
            ..StftConfig::default()
        };
        match StftPlan::new(&cfg) {
            Err(DspError::InvalidConfig { key, .. }) => assert_eq!(key, "win_length"),
            other => panic!("{other:?}"),
        }
    }
}
