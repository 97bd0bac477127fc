//! Uncompressed PCM (WAV, AIFF, CAF, ...) straight from the container's packets to planar
//! `f32`, bypassing symphonia's generic sample buffer.
//!
//! Symphonia's PCM decoder renders every sample through a per-sample closure into a typed
//! buffer, which then converts to `f32`: for a 16 kHz s16 hour that was 130 of the decode
//! stage's 160 ms. Here each format is one tight loop over the packet's bytes that the
//! compiler vectorises. The values are exactly symphonia's (the same integer-to-float
//! conversions, tested against its decoder), and the container parsing (headers, streaming
//! WAVs, truncation) stays symphonia's.

use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_PCM_F32BE, CODEC_ID_PCM_F32LE, CODEC_ID_PCM_F64BE, CODEC_ID_PCM_F64LE,
    CODEC_ID_PCM_S16BE, CODEC_ID_PCM_S16LE, CODEC_ID_PCM_S24BE, CODEC_ID_PCM_S24LE,
    CODEC_ID_PCM_S32BE, CODEC_ID_PCM_S32LE, CODEC_ID_PCM_S8, CODEC_ID_PCM_U8,
};
use symphonia::core::codecs::audio::AudioCodecParameters;

/// A sample encoding this module converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    S8,
    U8,
    S16 { big: bool },
    S24 { big: bool },
    S32 { big: bool },
    F32 { big: bool },
    F64 { big: bool },
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::S8 | Encoding::U8 => 1,
            Encoding::S16 { .. } => 2,
            Encoding::S24 { .. } => 3,
            Encoding::S32 { .. } | Encoding::F32 { .. } => 4,
            Encoding::F64 { .. } => 8,
        }
    }
}

/// How the samples of a PCM stream are laid out in its packets: interleaved frames of
/// `channels` samples in one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcm {
    encoding: Encoding,
    channels: usize,
}

impl Pcm {
    /// The layout of `params`' stream, when it is PCM this module converts exactly as
    /// symphonia would: every sample coded in its format's full width (no `bits_per_coded_sample`
    /// narrower than the container, which symphonia shifts). Anything else (A-law, mu-law,
    /// unsigned 16-32 bit, packed widths) goes through symphonia's decoder.
    pub fn of(params: &AudioCodecParameters, channels: usize) -> Option<Pcm> {
        let encoding = match params.codec {
            CODEC_ID_PCM_S8 => Encoding::S8,
            CODEC_ID_PCM_U8 => Encoding::U8,
            CODEC_ID_PCM_S16LE => Encoding::S16 { big: false },
            CODEC_ID_PCM_S16BE => Encoding::S16 { big: true },
            CODEC_ID_PCM_S24LE => Encoding::S24 { big: false },
            CODEC_ID_PCM_S24BE => Encoding::S24 { big: true },
            CODEC_ID_PCM_S32LE => Encoding::S32 { big: false },
            CODEC_ID_PCM_S32BE => Encoding::S32 { big: true },
            CODEC_ID_PCM_F32LE => Encoding::F32 { big: false },
            CODEC_ID_PCM_F32BE => Encoding::F32 { big: true },
            CODEC_ID_PCM_F64LE => Encoding::F64 { big: false },
            CODEC_ID_PCM_F64BE => Encoding::F64 { big: true },
            _ => return None,
        };
        let width = 8 * encoding.bytes() as u32;
        let decoded = params.bits_per_sample.unwrap_or(width);
        let coded = params.bits_per_coded_sample.unwrap_or(decoded);
        (channels > 0 && decoded == width && coded == width).then_some(Pcm { encoding, channels })
    }

    /// Bytes per interleaved frame.
    fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * self.channels
    }

    /// Whether samples can lie outside [-1, 1] (float encodings), so they need the range check.
    pub fn is_float(&self) -> bool {
        matches!(self.encoding, Encoding::F32 { .. } | Encoding::F64 { .. })
    }

    /// Converts the whole frames of `data` into `planes` (one per channel, replaced), as
    /// symphonia's decoder would: a trailing partial frame is dropped. `scratch` holds the
    /// interleaved samples of multichannel streams.
    pub fn convert_into(&self, data: &[u8], scratch: &mut Vec<f32>, planes: &mut Vec<Vec<f32>>) {
        let frames = data.len() / self.frame_bytes();
        let data = &data[..frames * self.frame_bytes()];
        planes.resize_with(self.channels, Vec::new);
        for p in planes.iter_mut() {
            p.clear();
            p.resize(frames, 0.0);
        }
        if self.channels == 1 {
            convert(self.encoding, data, &mut planes[0]);
            return;
        }
        scratch.clear();
        scratch.resize(frames * self.channels, 0.0);
        convert(self.encoding, data, scratch);
        for (c, plane) in planes.iter_mut().enumerate() {
            for (d, frame) in plane.iter_mut().zip(scratch.chunks_exact(self.channels)) {
                *d = frame[c];
            }
        }
    }
}

/// `src` holds `dst.len()` samples of `enc`, back to back.
fn convert(enc: Encoding, src: &[u8], dst: &mut [f32]) {
    macro_rules! each {
        ($n:literal, |$b:ident| $e:expr) => {
            for (d, $b) in dst.iter_mut().zip(src.chunks_exact($n)) {
                let $b: [u8; $n] = $b.try_into().expect("chunks_exact");
                *d = $e;
            }
        };
    }
    // Symphonia's conversions (symphonia-core's audio/conv.rs), value for value.
    match enc {
        Encoding::S8 => each!(1, |b| b[0] as i8 as f32 / 128.0),
        Encoding::U8 => each!(1, |b| (b[0] as f32 / 128.0) - 1.0),
        Encoding::S16 { big: false } => each!(2, |b| i16::from_le_bytes(b) as f32 / 32_768.0),
        Encoding::S16 { big: true } => each!(2, |b| i16::from_be_bytes(b) as f32 / 32_768.0),
        Encoding::S24 { big: false } => {
            each!(3, |b| (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8)
                as f32
                / 8_388_608.0)
        }
        Encoding::S24 { big: true } => {
            each!(3, |b| (i32::from_le_bytes([0, b[2], b[1], b[0]]) >> 8)
                as f32
                / 8_388_608.0)
        }
        Encoding::S32 { big: false } => {
            each!(4, |b| (i32::from_le_bytes(b) as f64 / 2_147_483_648.0)
                as f32)
        }
        Encoding::S32 { big: true } => {
            each!(4, |b| (i32::from_be_bytes(b) as f64 / 2_147_483_648.0)
                as f32)
        }
        Encoding::F32 { big: false } => each!(4, |b| f32::from_le_bytes(b)),
        Encoding::F32 { big: true } => each!(4, |b| f32::from_be_bytes(b)),
        Encoding::F64 { big: false } => each!(8, |b| f64::from_le_bytes(b) as f32),
        Encoding::F64 { big: true } => each!(8, |b| f64::from_be_bytes(b) as f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphonia::core::audio::Channels;
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::packet::Packet;

    /// Every encoding, mono and multichannel, over random bytes (so every bit pattern of
    /// every width, NaN floats included), is converted to the bits symphonia's decoder gives.
    #[test]
    fn packets_convert_to_exactly_what_symphonias_decoder_gives() {
        let codecs = [
            CODEC_ID_PCM_S8,
            CODEC_ID_PCM_U8,
            CODEC_ID_PCM_S16LE,
            CODEC_ID_PCM_S16BE,
            CODEC_ID_PCM_S24LE,
            CODEC_ID_PCM_S24BE,
            CODEC_ID_PCM_S32LE,
            CODEC_ID_PCM_S32BE,
            CODEC_ID_PCM_F32LE,
            CODEC_ID_PCM_F32BE,
            CODEC_ID_PCM_F64LE,
            CODEC_ID_PCM_F64BE,
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut bytes = vec![0u8; 8 * 3 * 1153 + 5]; // a partial frame at the end
        for b in &mut bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        for codec in codecs {
            for channels in [1u16, 2, 3] {
                let mut params = AudioCodecParameters::new();
                params
                    .for_codec(codec)
                    .with_sample_rate(16_000)
                    .with_channels(Channels::Discrete(channels));
                let pcm = Pcm::of(&params, channels as usize).expect("a PCM layout");
                let mut decoder = super::super::codecs()
                    .make_audio_decoder(&params, &AudioDecoderOptions::default())
                    .expect("symphonia decodes it");
                let packet = Packet::new(0, Default::default(), Default::default(), bytes.clone());
                let mut want: Vec<Vec<f32>> = Vec::new();
                decoder
                    .decode(&packet)
                    .expect("decodes")
                    .copy_to_vecs_planar::<f32>(&mut want);
                let (mut got, mut scratch) = (Vec::new(), Vec::new());
                pcm.convert_into(&bytes, &mut scratch, &mut got);
                assert_eq!(got.len(), want.len(), "{codec:?} x{channels}");
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.len(), w.len(), "{codec:?} x{channels}");
                    assert!(!g.is_empty());
                    let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{codec:?} x{channels}: values differ from symphonia's"
                    );
                }
            }
        }
    }

    /// Streams coded narrower than their container, and codecs without an exact conversion
    /// here, go through symphonia's decoder.
    #[test]
    fn narrow_codings_and_other_codecs_are_left_to_symphonia() {
        let mut params = AudioCodecParameters::new();
        params
            .for_codec(CODEC_ID_PCM_S32LE)
            .with_bits_per_sample(32)
            .with_bits_per_coded_sample(24);
        assert_eq!(Pcm::of(&params, 1), None);
        let mut params = AudioCodecParameters::new();
        params.for_codec(symphonia::core::codecs::audio::well_known::CODEC_ID_PCM_MULAW);
        assert_eq!(Pcm::of(&params, 1), None);
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_PCM_S16LE);
        assert_eq!(Pcm::of(&params, 0), None);
        assert!(Pcm::of(&params, 2).is_some());
    }
}
