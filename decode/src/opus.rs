//! Opus for symphonia: the pure-Rust `opus-pure` decoder (a port of libopus, float output as
//! libopus's `opus_decode_float`) behind symphonia's [`AudioDecoder`] trait, so Ogg Opus goes through the same probe, packet
//! loop and error mapping as every other codec, and the build needs no C toolchain for it.
//!
//! The decoder always runs at 48 kHz (Opus's own rate; the Ogg header's "input sample rate"
//! is informational). The Ogg header's pre-skip is dropped from the first samples decoded, as
//! libopus' `opusdec` does; packet trims from the demuxer (end trimming by granule position)
//! are applied to every packet. How close it comes to libopus on the corpus is checked by
//! `tests/it/formats.rs` against `opusdec` (Debian's opus-tools).

use std::fmt;

use symphonia::core::audio::{
    layouts, AsGenericAudioBufferRef, AudioBuffer, AudioMut, AudioSpec, GenericAudioBufferRef,
};
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::{
    AudioCodecParameters, AudioDecoder, AudioDecoderOptions, FinalizeResult,
};
use symphonia::core::codecs::registry::{RegisterableAudioDecoder, SupportedAudioCodec};
use symphonia::core::codecs::CodecInfo;
use symphonia::core::errors::{decode_error, unsupported_error, Result};
use symphonia::core::packet::PacketRef;

/// Opus decodes at 48 kHz.
const OPUS_RATE_HZ: u32 = 48_000;
/// 120 ms at 48 kHz: the longest packet Opus allows.
const MAX_SAMPLES_PER_CHANNEL: usize = 5_760;

/// Symphonia decoder for Opus (mono and stereo, channel mapping family 0).
pub struct OpusDecoder {
    params: AudioCodecParameters,
    decoder: opus_pure::OpusDecoder,
    buf: AudioBuffer<f32>,
    pcm: Vec<f32>,
    channels: usize,
    /// Samples per channel still to drop from the start (the header's pre-skip).
    pre_skip_left: usize,
}

impl fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .field("pre_skip_left", &self.pre_skip_left)
            .finish_non_exhaustive()
    }
}

/// The pre-skip of an `OpusHead` packet (RFC 7845 §5.1), or 0 when the header is short or not
/// an OpusHead.
fn pre_skip(head: &[u8]) -> usize {
    if head.len() >= 12 && &head[..8] == b"OpusHead" {
        u16::from_le_bytes([head[10], head[11]]) as usize
    } else {
        0
    }
}

/// Channel mapping family of an `OpusHead` (byte 18), 0 when absent.
fn mapping_family(head: &[u8]) -> u8 {
    head.get(18).copied().unwrap_or(0)
}

fn audio_buffer(channels: usize, frames: usize) -> AudioBuffer<f32> {
    let layout = if channels == 1 {
        layouts::CHANNEL_LAYOUT_MONO
    } else {
        layouts::CHANNEL_LAYOUT_STEREO
    };
    AudioBuffer::new(AudioSpec::new(OPUS_RATE_HZ, layout), frames)
}

impl OpusDecoder {
    fn try_new(params: &AudioCodecParameters, _opts: &AudioDecoderOptions) -> Result<Self> {
        let Some(channels) = params.channels.as_ref().map(|c| c.count()) else {
            return unsupported_error("opus: the stream declares no channels");
        };
        let head = params.extra_data.as_deref().unwrap_or(&[]);
        if !(1..=2).contains(&channels) || mapping_family(head) != 0 {
            return unsupported_error("opus: only mono and stereo streams (mapping family 0)");
        }
        let decoder = match opus_pure::OpusDecoder::new(OPUS_RATE_HZ as i32, channels) {
            Ok(d) => d,
            Err(_) => return unsupported_error("opus: decoder set-up failed"),
        };
        let mut params = params.clone();
        params.sample_rate = Some(OPUS_RATE_HZ);
        Ok(Self {
            params,
            decoder,
            buf: audio_buffer(channels, MAX_SAMPLES_PER_CHANNEL),
            pcm: vec![0.0; MAX_SAMPLES_PER_CHANNEL * channels],
            channels,
            pre_skip_left: pre_skip(head),
        })
    }
}

impl AudioDecoder for OpusDecoder {
    fn codec_info(&self) -> &CodecInfo {
        &Self::supported_codecs()[0].info
    }

    fn reset(&mut self) {
        // Only fails for a decoder that was never set up, which `try_new` rules out.
        let _ = self.decoder.reset_state();
    }

    fn codec_params(&self) -> &AudioCodecParameters {
        &self.params
    }

    fn decode_ref(&mut self, packet: &PacketRef<'_>) -> Result<GenericAudioBufferRef<'_>> {
        if packet.data.is_empty() {
            // An empty packet would ask the decoder to conceal a loss; a file has none.
            return decode_error("opus: empty packet");
        }
        let frames = match self
            .decoder
            .decode(packet.data, MAX_SAMPLES_PER_CHANNEL, &mut self.pcm)
        {
            Ok(n) => n.min(MAX_SAMPLES_PER_CHANNEL),
            Err(_) => return decode_error("opus: invalid packet"),
        };
        self.buf = audio_buffer(self.channels, frames);
        self.buf.render_uninit(None);
        let pcm = &self.pcm[..frames * self.channels];
        self.buf.copy_from_slice_interleaved(&pcm);
        let skip = self.pre_skip_left.min(frames);
        self.pre_skip_left -= skip;
        let start = (packet.trim_start.get() as usize).max(skip);
        self.buf.trim(start, packet.trim_end.get() as usize);
        Ok(self.buf.as_generic_audio_buffer_ref())
    }

    fn finalize(&mut self) -> FinalizeResult {
        FinalizeResult::default()
    }

    fn last_decoded(&self) -> GenericAudioBufferRef<'_> {
        self.buf.as_generic_audio_buffer_ref()
    }
}

impl RegisterableAudioDecoder for OpusDecoder {
    fn try_registry_new(
        params: &AudioCodecParameters,
        opts: &AudioDecoderOptions,
    ) -> Result<Box<dyn AudioDecoder>> {
        Ok(Box::new(OpusDecoder::try_new(params, opts)?))
    }

    fn supported_codecs() -> &'static [SupportedAudioCodec] {
        &[SupportedAudioCodec {
            id: CODEC_ID_OPUS,
            info: CodecInfo {
                short_name: "opus",
                long_name: "Opus",
                profiles: &[],
            },
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_skip_reads_the_opus_head() {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
        assert_eq!(pre_skip(&head), 312);
        assert_eq!(mapping_family(&head), 0);
        assert_eq!(pre_skip(b"OpusTags...."), 0);
        assert_eq!(pre_skip(b"Opus"), 0);
    }
}
