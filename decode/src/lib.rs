//! Decode: bytes of an audio file to f32 PCM blocks, mixed down or not, resampled or not.
//!
//! Containers and codecs are recognised by content (symphonia's probe, no extension hint);
//! the extension is only checked against what was found. PCM is produced block by block
//! ([`AudioStream::next_block`]), so a long file is never held whole in memory. This crate
//! knows nothing of features, outputs or the ledger: klio-edge's decode stage is this crate,
//! and the Python package's `klio_edge.load` is too, so both decode and resample alike.

mod config;
pub mod mp4;
#[cfg(feature = "opus")]
pub mod opus;
mod pcm;

pub use config::{Channels, Damaged, DecodeConfig, DecodeHashView, Mismatch, SampleRate};

use std::fs::File;
use std::path::Path;

use audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// The largest sample magnitude accepted (float PCM; integer PCM is within +-1): 120 dB over
/// full scale. Beyond it a sample is not audio, and its square overflows f32 in the power
/// spectrum.
pub const MAX_SAMPLE_MAGNITUDE: f32 = 1e6;

/// A WAV written as a stream (`ffmpeg ... -f wav -` puts 0xFFFFFFFF where the RIFF and data
/// sizes go, not knowing them yet): the true sizes from the file's length, as patches
/// (offset, little-endian bytes) for [`Patched`]. `None` for anything else.
fn stream_patches<R: std::io::Read + std::io::Seek>(r: &mut R) -> Option<Vec<(u64, [u8; 4])>> {
    use std::io::SeekFrom;
    let len = r.seek(SeekFrom::End(0)).ok()?;
    let mut head = [0u8; 12];
    r.seek(SeekFrom::Start(0)).ok()?;
    r.read_exact(&mut head).ok()?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let riff = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut at = 12u64;
    for _ in 0..64 {
        let mut c = [0u8; 8];
        r.seek(SeekFrom::Start(at)).ok()?;
        r.read_exact(&mut c).ok()?;
        let size = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        if &c[0..4] == b"data" {
            if size != u32::MAX && riff != u32::MAX {
                return None;
            }
            let data = (len.saturating_sub(at + 8)).min(u64::from(u32::MAX - 1)) as u32;
            let whole = (len.saturating_sub(8)).min(u64::from(u32::MAX - 1)) as u32;
            return Some(vec![(4, whole.to_le_bytes()), (at + 4, data.to_le_bytes())]);
        }
        at = at.checked_add(8 + u64::from(size) + u64::from(size & 1))?;
        if at >= len {
            return None;
        }
    }
    None
}

/// A media source with a few bytes replaced (a streaming WAV's sizes, see
/// [`stream_patches`]).
struct Patched {
    inner: Box<dyn symphonia::core::io::MediaSource>,
    pos: u64,
    patches: Vec<(u64, [u8; 4])>,
}

impl Patched {
    fn new(inner: Box<dyn symphonia::core::io::MediaSource>, patches: Vec<(u64, [u8; 4])>) -> Self {
        Patched {
            inner,
            pos: 0,
            patches,
        }
    }
}

impl std::io::Read for Patched {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let p = at + i as u64;
                if p >= start && p < end {
                    buf[(p - start) as usize] = *b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl std::io::Seek for Patched {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

impl symphonia::core::io::MediaSource for Patched {
    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        self.inner.byte_len()
    }
}

/// What klio-edge reads of a file's header itself, where symphonia does not.
#[derive(Debug, Default)]
struct Sniffed {
    /// An MP4's edit list.
    edit: Option<mp4::Edit>,
    /// A streaming WAV's true sizes.
    patches: Option<Vec<(u64, [u8; 4])>>,
    /// Whether `patches` came (a streaming WAV).
    streaming: bool,
    /// An AIFF's declared frame count (COMM).
    aiff_frames: Option<u64>,
}

impl Sniffed {
    /// Reads the first bytes once and asks only the reader of that format.
    fn of<R: std::io::Read + std::io::Seek>(r: &mut R) -> Sniffed {
        let mut head = [0u8; 12];
        if r.read_exact(&mut head).is_err() {
            return Sniffed::default();
        }
        match (&head[0..4], &head[4..8], &head[8..12]) {
            (_, b"ftyp", _) => Sniffed {
                edit: mp4_edit(r),
                ..Sniffed::default()
            },
            (b"RIFF", _, b"WAVE") => {
                let patches = stream_patches(r);
                Sniffed {
                    streaming: patches.is_some(),
                    patches,
                    ..Sniffed::default()
                }
            }
            (b"FORM", _, b"AIFF" | b"AIFC") => Sniffed {
                aiff_frames: aiff_frames(r),
                ..Sniffed::default()
            },
            _ => Sniffed::default(),
        }
    }
}

/// The frame count an AIFF's COMM chunk declares, if the file is one.
fn aiff_frames<R: std::io::Read + std::io::Seek>(r: &mut R) -> Option<u64> {
    use std::io::SeekFrom;
    let len = r.seek(SeekFrom::End(0)).ok()?;
    let mut head = [0u8; 12];
    r.seek(SeekFrom::Start(0)).ok()?;
    r.read_exact(&mut head).ok()?;
    if &head[0..4] != b"FORM" || !(&head[8..12] == b"AIFF" || &head[8..12] == b"AIFC") {
        return None;
    }
    let mut at = 12u64;
    for _ in 0..64 {
        let mut c = [0u8; 14];
        r.seek(SeekFrom::Start(at)).ok()?;
        r.read_exact(&mut c).ok()?;
        let size = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
        if &c[0..4] == b"COMM" {
            return Some(u64::from(u32::from_be_bytes([c[10], c[11], c[12], c[13]])));
        }
        at = at.checked_add(8 + u64::from(size) + u64::from(size & 1))?;
        if at >= len {
            return None;
        }
    }
    None
}

/// The edit list of an MP4 (`ftyp` at offset 4), if the file is one and has one.
fn mp4_edit<R: std::io::Read + std::io::Seek>(r: &mut R) -> Option<mp4::Edit> {
    let mut head = [0u8; 8];
    r.seek(std::io::SeekFrom::Start(0)).ok()?;
    r.read_exact(&mut head).ok()?;
    if &head[4..8] != b"ftyp" {
        return None;
    }
    let len = r.seek(std::io::SeekFrom::End(0)).ok()?;
    mp4::audio_edit(r, len)
}

/// An I/O error from the demuxer: the operating system's (retryable `io`), or the demuxer's
/// own word for bad data (a size past the end of the file), or an offset the header names
/// that no file can have (EINVAL from the seek), which no retry fixes (`invalid_stream`).
fn io_error(e: std::io::Error, context: &str) -> DecodeError {
    match e.raw_os_error() {
        // EINVAL from a seek to where the header says data is (a CAF declaring 2^62 bytes).
        Some(libc::EINVAL) => DecodeError::InvalidStream(format!(
            "{context}: the header points past anything a file can hold ({e})"
        )),
        Some(_) => DecodeError::Io(e),
        None => DecodeError::InvalidStream(format!("{context}: {e}")),
    }
}

/// Input frames per resampler FFT block, at least (rounded up to the rates' minimum block).
const RESAMPLER_BLOCK: usize = 4096;

/// The resampler's block for `from -> to` Hz: `k` of the rates' minimum block (`from / gcd`
/// input frames), `k` at least enough for [`RESAMPLER_BLOCK`] frames and at most twice that,
/// with the smallest odd part (then the smallest), so the block's FFTs (`2 k from / gcd` and
/// `2 k to / gcd` points) have the fewest odd factors. For 44.1 -> 16 kHz (minimum block 441
/// = 3^2 7^2) that is k = 16 (7,056 frames) instead of 10 (4,410: FFTs with a 5 besides the
/// 7s): the resampler ran in 1,117 ms per hour, now about 740 ms, with a longer filter.
fn resampler_block(from: u32, to: u32) -> usize {
    let (mut a, mut b) = (from as usize, to as usize);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let min_in = from as usize / a.max(1);
    let k0 = RESAMPLER_BLOCK.div_ceil(min_in).max(1);
    let k = (k0..=2 * k0)
        .min_by_key(|k| (k >> k.trailing_zeros(), *k))
        .unwrap_or(k0);
    k * min_in
}

/// A finite sample within [`MAX_SAMPLE_MAGNITUDE`] (NaN is not).
fn in_range(v: f32) -> bool {
    v.is_finite() && v.abs() <= MAX_SAMPLE_MAGNITUDE
}

/// Why a file could not be decoded. Each variant is one `error_kind` in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// The file has no bytes.
    #[error("file is empty (0 bytes)")]
    Empty,
    /// No known container or stream format was recognised in the content.
    #[error("unrecognised format: {0}")]
    UnknownFormat(String),
    /// The container holds no audio track.
    #[error("no audio track in the {0} container")]
    NoAudioTrack(String),
    /// The codec is not one klio-edge decodes.
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// The stream's headers are invalid (zero channels, no sample rate, ...).
    #[error("invalid stream: {0}")]
    InvalidStream(String),
    /// The stream ends before its declared end, or mid-packet.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Packets failed to decode.
    #[error("corrupt stream: {0}")]
    Corrupt(String),
    /// The audio is longer than `decode.max_duration_s`.
    #[error("audio is {seconds:.1} s long, over decode.max_duration_s = {max:.1} s")]
    TooLong {
        /// Declared or decoded length.
        seconds: f64,
        /// The limit.
        max: f64,
    },
    /// More channels than `decode.max_channels`.
    #[error("{0} channels, over decode.max_channels")]
    TooManyChannels(usize),
    /// A sample rate over `decode.max_sample_rate_hz`.
    #[error("sample rate {0} Hz, over decode.max_sample_rate_hz")]
    RateTooHigh(u32),
    /// A sample rate under `decode.min_sample_rate_hz`.
    #[error("sample rate {0} Hz, under decode.min_sample_rate_hz")]
    RateTooLow(u32),
    /// The content is a different format from what the name says.
    #[error("file name says .{ext} but the content is {content} (set decode.extension_mismatch = \"warn\" to accept)")]
    ExtensionMismatch {
        /// The file's extension.
        ext: String,
        /// The container found.
        content: String,
    },
    /// The stream decoded to zero samples.
    #[error("no audio samples decoded")]
    NoSamples,
    /// The resampler could not be built or failed.
    #[error("resampling {from} Hz to {to} Hz failed: {reason}")]
    Resample {
        /// Source rate.
        from: u32,
        /// Target rate.
        to: u32,
        /// What went wrong.
        reason: String,
    },
}

/// What was found in the file and what was produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AudioInfo {
    /// Container short name (`wave`, `flac`, `ogg`, `mp3`, `isomp4`, `aiff`, ...).
    pub container: String,
    /// Codec short name.
    pub codec: String,
    /// The file's sample rate in Hz.
    pub source_sample_rate_hz: u32,
    /// The file's channel count.
    pub source_channels: usize,
    /// Bits per sample where the codec has them.
    pub bits_per_sample: Option<u32>,
    /// The rate of the PCM handed on, in Hz.
    pub sample_rate_hz: u32,
    /// The channel count of the PCM handed on.
    pub channels: usize,
    /// Frames the container declares, if it does.
    pub declared_frames: Option<u64>,
    /// Frames decoded at the source rate.
    pub source_frames: u64,
    /// Frames handed on at the output rate.
    pub frames: u64,
    /// Problems tolerated under `on_damaged = "partial"` or `extension_mismatch = "warn"`.
    pub warnings: Vec<String>,
}

impl AudioInfo {
    /// Decoded duration in seconds (source frames over source rate).
    pub fn duration_s(&self) -> f64 {
        if self.source_sample_rate_hz == 0 {
            0.0
        } else {
            self.source_frames as f64 / self.source_sample_rate_hz as f64
        }
    }
}

fn codecs() -> &'static CodecRegistry {
    static REGISTRY: std::sync::OnceLock<CodecRegistry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut r);
        #[cfg(feature = "opus")]
        r.register_audio_decoder::<crate::opus::OpusDecoder>();
        r
    })
}

/// Containers a file extension may hold (symphonia short names); `None` for extensions we
/// don't judge.
fn expected_containers(ext: &str) -> Option<&'static [&'static str]> {
    Some(match ext.to_ascii_lowercase().as_str() {
        "wav" | "wave" => &["wave"],
        "flac" => &["flac"],
        "mp3" => &["mp3"],
        "mp2" => &["mp2"],
        "ogg" | "oga" | "opus" => &["ogg"],
        "m4a" | "mp4" | "m4b" | "mov" => &["isomp4"],
        "aac" => &["aac", "isomp4"],
        "aif" | "aiff" | "aifc" => &["aiff"],
        "caf" => &["caf"],
        "mka" | "mkv" | "webm" => &["mkv", "matroska"],
        _ => return None,
    })
}

/// A decoded stream, pulled block by block.
pub struct AudioStream {
    format: Box<dyn FormatReader + 'static>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    info: AudioInfo,
    mono: bool,
    on_damaged: Damaged,
    max_frames: u64,
    max_duration_s: f64,
    decoded: Vec<Vec<f32>>,
    block: Vec<Vec<f32>>,
    resampler: Option<StreamResampler>,
    eof: bool,
    packets: u64,
    max_packet_frames: u64,
    /// A WAV written as a stream (data size 0xFFFFFFFF): it ends where the file ends.
    streaming: bool,
    /// Decoded frames still to drop from the start (an MP4 edit list's encoder delay).
    skip_frames: u64,
    /// Plain PCM: packets convert straight to `decoded` ([`pcm::Pcm`]), not through the decoder.
    pcm: Option<pcm::Pcm>,
    /// Interleaved samples of a multichannel PCM packet.
    scratch: Vec<f32>,
}

impl AudioStream {
    /// Opens and probes `path`, builds the decoder, and checks the stream's parameters.
    ///
    /// # Errors
    /// Any [`DecodeError`] found before the first packet.
    pub fn open(path: &Path, cfg: &DecodeConfig) -> Result<AudioStream, DecodeError> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Err(DecodeError::Empty);
        }
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
        let mut sniffed = Sniffed::of(&mut File::open(path)?);
        let source: Box<dyn symphonia::core::io::MediaSource> = match sniffed.patches.take() {
            Some(p) => Box::new(Patched::new(Box::new(file), p)),
            None => Box::new(file),
        };
        Self::from_source(source, ext, sniffed, cfg)
    }

    /// [`Self::open`] on bytes in memory; `ext` is the file name's extension, if any (for the
    /// extension check).
    ///
    /// # Errors
    /// As for [`Self::open`].
    pub fn from_bytes(
        bytes: Vec<u8>,
        ext: Option<String>,
        cfg: &DecodeConfig,
    ) -> Result<AudioStream, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let mut sniffed = Sniffed::of(&mut std::io::Cursor::new(&bytes));
        let cursor = Box::new(std::io::Cursor::new(bytes));
        let source: Box<dyn symphonia::core::io::MediaSource> = match sniffed.patches.take() {
            Some(p) => Box::new(Patched::new(cursor, p)),
            None => cursor,
        };
        Self::from_source(source, ext, sniffed, cfg)
    }

    fn from_source(
        source: Box<dyn symphonia::core::io::MediaSource>,
        ext: Option<String>,
        sniffed: Sniffed,
        cfg: &DecodeConfig,
    ) -> Result<AudioStream, DecodeError> {
        let Sniffed {
            edit,
            streaming,
            aiff_frames,
            ..
        } = sniffed;
        let mss = MediaSourceStream::new(source, Default::default());
        let format = symphonia::default::get_probe()
            .probe(
                &Hint::new(),
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                    DecodeError::Truncated(format!("file ends inside its headers ({io})"))
                }
                SymError::IoError(io) => io_error(io, "in its headers"),
                SymError::Unsupported(what) => DecodeError::UnknownFormat(format!(
                    "no supported audio container or stream found in the content ({what})"
                )),
                other => DecodeError::InvalidStream(other.to_string()),
            })?;
        let container = format.format_info().short_name.to_string();
        let mut warnings = Vec::new();
        if let Some(ext) = ext {
            if let Some(expected) = expected_containers(&ext) {
                if !expected.contains(&container.as_str()) {
                    let long = format.format_info().long_name.to_string();
                    match cfg.extension_mismatch {
                        Mismatch::Fail => {
                            return Err(DecodeError::ExtensionMismatch { ext, content: long })
                        }
                        Mismatch::Warn => warnings
                            .push(format!("file name says .{ext} but the content is {long}")),
                    }
                }
            }
        }
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| DecodeError::NoAudioTrack(container.clone()))?;
        let track_id = track.id;
        // AIFF: the COMM chunk's frame count is what the file promises (symphonia counts
        // what the SSND chunk holds, so a file declaring more than it has looked complete).
        let declared_frames = match aiff_frames {
            Some(n) if container == "aiff" => Some(n),
            _ => track.num_frames,
        };
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| DecodeError::NoAudioTrack(container.clone()))?
            .clone();
        let decoder = codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| match e {
                SymError::Unsupported(_) => DecodeError::UnsupportedCodec(format!(
                    "{:?} in a {container} container",
                    params.codec
                )),
                other => DecodeError::InvalidStream(other.to_string()),
            })?;
        let codec = decoder.codec_info().short_name.to_string();
        let rate = params
            .sample_rate
            .filter(|&r| r > 0)
            .ok_or_else(|| DecodeError::InvalidStream("no sample rate".into()))?;
        let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
        if channels == 0 {
            return Err(DecodeError::InvalidStream("zero channels".into()));
        }
        if channels > cfg.max_channels {
            return Err(DecodeError::TooManyChannels(channels));
        }
        if rate > cfg.max_sample_rate_hz {
            return Err(DecodeError::RateTooHigh(rate));
        }
        if rate < cfg.min_sample_rate_hz {
            return Err(DecodeError::RateTooLow(rate));
        }
        // MP4's edit list (symphonia does not apply it): the encoder delay it names is
        // dropped, as ffmpeg's default decode (and so librosa, through it) does. ffmpeg keeps
        // the end padding (the corpus's M4A: 471040 samples, where the edit's duration says
        // 470723), and so do we: the samples are ffmpeg's.
        let edit = edit.filter(|_| container == "isomp4");
        let skip_frames = edit.map_or(0, |e| e.frames(e.skip, rate));
        if let Some(n) = declared_frames {
            let seconds = n as f64 / rate as f64;
            if seconds > cfg.max_duration_s {
                return Err(DecodeError::TooLong {
                    seconds,
                    max: cfg.max_duration_s,
                });
            }
        }
        let out_rate = match cfg.sample_rate_hz {
            SampleRate::Native => rate,
            SampleRate::Hz(hz) => hz,
        };
        let out_channels = match cfg.channels {
            Channels::Mono => 1,
            Channels::Keep => channels,
        };
        let resampler = if out_rate != rate {
            Some(StreamResampler::new(rate, out_rate, out_channels)?)
        } else {
            None
        };
        Ok(AudioStream {
            format,
            decoder,
            track_id,
            info: AudioInfo {
                container,
                codec,
                source_sample_rate_hz: rate,
                source_channels: channels,
                bits_per_sample: params.bits_per_sample,
                sample_rate_hz: out_rate,
                channels: out_channels,
                declared_frames,
                source_frames: 0,
                frames: 0,
                warnings,
            },
            mono: cfg.channels == Channels::Mono,
            on_damaged: cfg.on_damaged,
            max_frames: (cfg.max_duration_s * rate as f64).ceil() as u64,
            max_duration_s: cfg.max_duration_s,
            decoded: Vec::new(),
            block: vec![Vec::new(); out_channels],
            resampler,
            eof: false,
            packets: 0,
            max_packet_frames: params.max_frames_per_packet.unwrap_or(0),
            streaming,
            skip_frames,
            pcm: pcm::Pcm::of(&params, channels),
            scratch: Vec::new(),
        })
    }

    /// What is known so far; complete once [`Self::next_block`] has returned `None`.
    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    /// Consumes the stream, returning the final [`AudioInfo`].
    pub fn into_info(self) -> AudioInfo {
        self.info
    }

    fn damaged(&mut self, err: DecodeError) -> Result<(), DecodeError> {
        match self.on_damaged {
            Damaged::Fail => Err(err),
            Damaged::Partial => {
                self.info.warnings.push(err.to_string());
                Ok(())
            }
        }
    }

    /// The next block of PCM, one slice per output channel (all the same length, never
    /// empty), or `None` at the end of the stream.
    ///
    /// # Errors
    /// Truncation and corruption (unless `on_damaged = "partial"`), over-long audio, a
    /// channel-count change mid-stream, no samples at all.
    pub fn next_block(&mut self) -> Result<Option<&[Vec<f32>]>, DecodeError> {
        for ch in &mut self.block {
            ch.clear();
        }
        while self.block[0].is_empty() {
            if self.eof {
                return Ok(None);
            }
            self.pull()?;
        }
        self.info.frames += self.block[0].len() as u64;
        Ok(Some(&self.block))
    }

    /// Decodes one packet (or handles the end of the stream) into `self.block`.
    fn pull(&mut self) -> Result<(), DecodeError> {
        let packet = match self.format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => return self.end(),
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                if !self.streaming {
                    let at = self.info.duration_s();
                    self.damaged(DecodeError::Truncated(format!(
                        "file ends inside a packet after {at:.3} s of audio"
                    )))?;
                }
                return self.end();
            }
            Err(SymError::IoError(e)) => return Err(io_error(e, "reading a packet")),
            Err(SymError::ResetRequired) => {
                // A chained stream (e.g. concatenated Ogg files): we decode the first link.
                self.damaged(DecodeError::Corrupt(
                    "stream changes its track layout midway (chained stream); only the first part is decoded".into(),
                ))?;
                return self.end();
            }
            Err(e) => {
                let at = self.info.duration_s();
                self.damaged(DecodeError::Corrupt(format!("after {at:.3} s: {e}")))?;
                return self.end();
            }
        };
        if packet.track_id != self.track_id {
            return Ok(());
        }
        self.packets += 1;
        if let Some(pcm) = self.pcm {
            pcm.convert_into(&packet.data, &mut self.scratch, &mut self.decoded);
        } else {
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymError::DecodeError(msg)) => {
                    let at = self.info.duration_s();
                    return self.damaged(DecodeError::Corrupt(format!(
                        "packet {} at {at:.3} s does not decode: {msg}",
                        self.packets
                    )));
                }
                Err(SymError::IoError(e)) => {
                    let at = self.info.duration_s();
                    self.damaged(DecodeError::Truncated(format!(
                        "packet at {at:.3} s is cut short: {e}"
                    )))?;
                    return Ok(());
                }
                Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
            };
            let n_ch = buf.spec().channels().count();
            if n_ch != self.info.source_channels {
                return Err(DecodeError::InvalidStream(format!(
                    "channel count changes from {} to {n_ch} mid-stream",
                    self.info.source_channels
                )));
            }
            if buf.spec().rate() != self.info.source_sample_rate_hz {
                return Err(DecodeError::InvalidStream(format!(
                    "sample rate changes from {} to {} Hz mid-stream",
                    self.info.source_sample_rate_hz,
                    buf.spec().rate()
                )));
            }
            buf.copy_to_vecs_planar::<f32>(&mut self.decoded);
        }
        let n_ch = self.decoded.len();
        // Float streams can hold NaN, infinity or values far beyond full scale; they would
        // poison the resampler (rubato panics on them: found by fuzzing, and by a WAV of
        // constant 3e38) and overflow every power feature.
        if self.pcm.is_none_or(|p| p.is_float())
            && self
                .decoded
                .iter()
                .any(|c| c.iter().fold(false, |bad, v| bad | !in_range(*v)))
        {
            let at = self.info.duration_s();
            self.damaged(DecodeError::Corrupt(format!(
                "packet {} at {at:.3} s holds NaN, infinite or out-of-range samples \
                 (beyond +-{MAX_SAMPLE_MAGNITUDE:e}, {} dB over full scale: not audio)",
                self.packets,
                (20.0 * MAX_SAMPLE_MAGNITUDE.log10()).round()
            )))?;
            for v in self.decoded.iter_mut().flatten() {
                if !in_range(*v) {
                    *v = 0.0;
                }
            }
        }
        if self.skip_frames > 0 {
            let n = (self.skip_frames as usize).min(self.decoded.first().map_or(0, Vec::len));
            for c in &mut self.decoded {
                c.drain(..n);
            }
            self.skip_frames -= n as u64;
        }
        let frames = self.decoded.first().map_or(0, Vec::len);
        self.info.source_frames += frames as u64;
        if self.info.source_frames > self.max_frames {
            return Err(DecodeError::TooLong {
                seconds: self.info.duration_s(),
                max: self.max_duration_s,
            });
        }
        if frames == 0 {
            return Ok(());
        }
        if self.mono && n_ch > 1 {
            // librosa's to_mono: the mean over channels.
            let (first, rest) = self.decoded.split_at_mut(1);
            let mix = &mut first[0];
            for ch in rest.iter() {
                for (m, v) in mix.iter_mut().zip(ch) {
                    *m += v;
                }
            }
            let inv = n_ch as f32;
            mix.iter_mut().for_each(|m| *m /= inv);
            self.decoded.truncate(1);
        }
        match &mut self.resampler {
            None => {
                for (dst, src) in self.block.iter_mut().zip(&self.decoded) {
                    dst.extend_from_slice(src);
                }
            }
            Some(r) => r.push(&self.decoded, &mut self.block)?,
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), DecodeError> {
        self.eof = true;
        if let Some(declared) = self.info.declared_frames {
            // Codecs with encoder delay (Opus pre-skip, AAC priming) may declare a few hundred
            // frames more than they yield; a real truncation is far larger than one packet.
            let slack = self.max_packet_frames.max(2048);
            if self.info.source_frames + slack < declared {
                let rate = self.info.source_sample_rate_hz as f64;
                self.damaged(DecodeError::Truncated(format!(
                    "decoded {:.3} s of the {:.3} s the header declares",
                    self.info.source_frames as f64 / rate,
                    declared as f64 / rate
                )))?;
            }
        }
        if self.info.source_frames == 0 {
            return Err(DecodeError::NoSamples);
        }
        if let Some(r) = &mut self.resampler {
            r.finish(&mut self.block)?;
        }
        Ok(())
    }
}

/// A streaming wrapper around rubato's FFT resampler that trims its delay and returns exactly
/// `ceil(n_in * out_rate / in_rate)` frames, like a whole-signal resample would.
///
/// The FFT block is [`resampler_block`] input frames (4,096 to 8,192), one sub-chunk: its anti-aliasing
/// filter is as long as the block, so the passband is flat (within 0.01 dB) to 0.98 of the
/// lower Nyquist frequency and the stopband is past 130 dB beyond it. rubato's default (a
/// 256-frame sub-chunk) was -7.7 dB at 0.9 of Nyquist for 44.1 -> 22.05 kHz and -25 dB for
/// 48 -> 16 kHz, where soxr HQ (librosa's default) is flat to 0.9 and -2.9 dB at 0.95.
struct StreamResampler {
    /// Always `Some` until dropped, when it goes back to [`RESAMPLERS`].
    inner: Option<Fft<f32>>,
    channels: usize,
    from: u32,
    to: u32,
    pending: Vec<Vec<f32>>,
    out: Vec<Vec<f32>>,
    delay_left: usize,
    frames_in: u64,
    frames_out: u64,
}

fn resample_error(from: u32, to: u32, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::Resample {
        from,
        to,
        reason: reason.to_string(),
    }
}

/// Resamplers of finished items, reset, by (from, to, channels): building one (its sinc
/// filter, windowed, and that filter's FFT) costs as much as resampling 0.5 s of audio, which
/// for short clips was a tenth of the whole run.
static RESAMPLERS: std::sync::Mutex<Vec<(ResamplerKey, Fft<f32>)>> =
    std::sync::Mutex::new(Vec::new());

/// (from, to, channels).
type ResamplerKey = (u32, u32, usize);

/// Idle resamplers kept at most (the oldest goes first).
const RESAMPLERS_KEPT: usize = 16;

impl StreamResampler {
    fn new(from: u32, to: u32, channels: usize) -> Result<Self, DecodeError> {
        let pooled = {
            let mut pool = RESAMPLERS.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .rposition(|(k, _)| *k == (from, to, channels))
                .map(|i| pool.remove(i).1)
        };
        let inner = match pooled {
            Some(r) => r,
            None => Fft::<f32>::new_custom(
                from as usize,
                to as usize,
                resampler_block(from, to),
                1,
                channels,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(|e| resample_error(from, to, e))?,
        };
        let out_max = inner.output_frames_max();
        Ok(StreamResampler {
            delay_left: inner.output_delay(),
            inner: Some(inner),
            channels,
            from,
            to,
            pending: vec![Vec::new(); channels],
            out: vec![vec![0.0; out_max]; channels],
            frames_in: 0,
            frames_out: 0,
        })
    }

    fn fft(&mut self) -> &mut Fft<f32> {
        self.inner.as_mut().expect("taken only on drop")
    }

    fn push(&mut self, input: &[Vec<f32>], block: &mut [Vec<f32>]) -> Result<(), DecodeError> {
        for (p, x) in self.pending.iter_mut().zip(input) {
            p.extend_from_slice(x);
        }
        self.frames_in += input[0].len() as u64;
        let mut used = 0;
        loop {
            let need = self.fft().input_frames_next();
            if self.pending[0].len() - used < need {
                break;
            }
            self.run(used, None, block)?;
            used += need;
        }
        for p in &mut self.pending {
            p.drain(..used);
        }
        Ok(())
    }

    fn run(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        block: &mut [Vec<f32>],
    ) -> Result<(), DecodeError> {
        let channels = self.pending.len();
        let avail = self.pending[0].len();
        let input = SequentialSliceOfVecs::new(&self.pending[..], channels, avail)
            .map_err(|e| resample_error(self.from, self.to, e))?;
        let out_len = self.out[0].len();
        let mut output = SequentialSliceOfVecs::new_mut(&mut self.out[..], channels, out_len)
            .map_err(|e| resample_error(self.from, self.to, e))?;
        let mut indexing = Indexing::new();
        indexing.input_offset = offset;
        indexing.partial_len = partial;
        let (_, n_out) = self
            .inner
            .as_mut()
            .expect("taken only on drop")
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|e| resample_error(self.from, self.to, e))?;
        let skip = self.delay_left.min(n_out);
        self.delay_left -= skip;
        for (dst, src) in block.iter_mut().zip(&self.out) {
            dst.extend_from_slice(&src[skip..n_out]);
        }
        self.frames_out += (n_out - skip) as u64;
        Ok(())
    }

    fn finish(&mut self, block: &mut [Vec<f32>]) -> Result<(), DecodeError> {
        let want = (self.frames_in * self.to as u64).div_ceil(self.from as u64);
        let before = block[0].len() as u64;
        let start_out = self.frames_out;
        let left = self.pending[0].len();
        self.run(0, Some(left), block)?;
        let mut guard = 0;
        while self.frames_out < want {
            self.run(0, Some(0), block)?;
            guard += 1;
            if guard > 1_000 {
                return Err(resample_error(
                    self.from,
                    self.to,
                    "resampler does not drain",
                ));
            }
        }
        let produced = self.frames_out - start_out;
        let extra = (self.frames_out - want).min(produced) as usize;
        let keep = (before + produced) as usize - extra;
        for ch in block.iter_mut() {
            ch.truncate(keep);
        }
        self.frames_out = want;
        Ok(())
    }
}

impl Drop for StreamResampler {
    /// The resampler goes back to the pool, reset (its overlap and scratch zeroed: as good
    /// as new, tested by `a_pooled_resampler_gives_what_a_new_one_gives`).
    fn drop(&mut self) {
        if let Some(mut r) = self.inner.take() {
            r.reset();
            let mut pool = RESAMPLERS.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() >= RESAMPLERS_KEPT {
                pool.remove(0);
            }
            pool.push(((self.from, self.to, self.channels), r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gain (dB) of a sine at `f` Hz through the streaming resampler, measured in the middle
    /// of the output (away from the ends), fed in 1,000-frame blocks.
    fn gain_db(from: u32, to: u32, f: f64) -> f64 {
        let mut r = StreamResampler::new(from, to, 1).unwrap();
        let n = from as usize * 2;
        let x: Vec<f32> = (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / from as f64).sin() as f32 * 0.5)
            .collect();
        let mut out = vec![Vec::new()];
        for c in x.chunks(1000) {
            r.push(&[c.to_vec()], &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        let y = &out[0];
        assert_eq!(y.len() as u64, (n as u64 * to as u64).div_ceil(from as u64));
        let mid = &y[y.len() / 4..3 * y.len() / 4];
        let rms = (mid.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / mid.len() as f64).sqrt();
        20.0 * (rms / (0.5 / 2f64.sqrt())).log10()
    }

    /// Resamples `x` (2 channels) in 777-frame blocks with a resampler from the pool (or new).
    fn resample_two(from: u32, to: u32, x: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let mut r = StreamResampler::new(from, to, 2).unwrap();
        let mut out = vec![Vec::new(), Vec::new()];
        for i in (0..x[0].len()).step_by(777) {
            let end = (i + 777).min(x[0].len());
            r.push(&[x[0][i..end].to_vec(), x[1][i..end].to_vec()], &mut out)
                .unwrap();
        }
        r.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn a_pooled_resampler_gives_what_a_new_one_gives() {
        // A rate pair no other test uses, so the pool starts without one.
        let (from, to) = (37_800, 16_000);
        let noise = |seed: u32, n: usize| -> Vec<f32> {
            let mut s = seed;
            (0..n)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let b = vec![noise(3, 20_000), noise(4, 20_000)];
        let fresh = resample_two(from, to, &b);
        // A long item leaves overlap and scratch behind; the next item must not hear it.
        let a = vec![noise(1, 50_001), noise(2, 50_001)];
        let _ = resample_two(from, to, &a);
        let pooled = {
            let pool = RESAMPLERS.lock().unwrap();
            assert!(pool.iter().any(|(k, _)| *k == (from, to, 2)), "not pooled");
            drop(pool);
            resample_two(from, to, &b)
        };
        assert_eq!(fresh.len(), pooled.len());
        for (f, p) in fresh.iter().zip(&pooled) {
            assert_eq!(f.len(), p.len());
            assert!(f.iter().zip(p).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// The resampler's passband stays flat to 0.98 of the lower Nyquist frequency and its
    /// stopband deep, for the blocks [`resampler_block`] picks.
    #[test]
    fn resampler_is_flat_to_098_of_nyquist_and_deep_beyond() {
        for (from, to) in [
            (44_100, 16_000),
            (48_000, 16_000),
            (44_100, 22_050),
            (22_050, 16_000),
        ] {
            let nyq = from.min(to) as f64 / 2.0;
            for frac in [0.5, 0.9, 0.95, 0.98] {
                let g = gain_db(from, to, frac * nyq);
                assert!(
                    g.abs() < 0.05,
                    "{from} -> {to}: {g:.3} dB at {frac} of Nyquist"
                );
            }
            if to < from {
                let g = gain_db(from, to, 1.05 * nyq);
                assert!(g < -100.0, "{from} -> {to}: {g:.1} dB at 1.05 of Nyquist");
            }
        }
    }

    #[test]
    fn resampler_blocks_have_few_odd_factors() {
        assert_eq!(resampler_block(44_100, 16_000), 16 * 441);
        assert_eq!(resampler_block(22_050, 16_000), 16 * 441);
        assert_eq!(resampler_block(48_000, 16_000), 2048 * 3);
        assert_eq!(resampler_block(44_100, 22_050), 4096);
        assert_eq!(resampler_block(8_000, 16_000), 4096);
        for (from, to) in [(44_100, 16_000), (48_000, 16_000), (11_025, 16_000), (7, 5)] {
            let b = resampler_block(from, to);
            assert!((RESAMPLER_BLOCK..=2 * RESAMPLER_BLOCK + from as usize).contains(&b));
        }
    }
}
