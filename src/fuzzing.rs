//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the property tests
//! (`tests/it/fuzz_props.rs`, stable Rust, in CI). Each takes untrusted input and must return
//! without panicking, hanging or allocating without bound; each asserts what must hold when
//! the input is accepted.

use crate::config::Config;
use crate::source as event;
use crate::stage::decode::AudioStream;
use crate::stage::decode::{Damaged, DecodeConfig, SampleRate};
use crate::stage::features::FeaturesConfig;

const EXTENSIONS: [Option<&str>; 7] = [
    None,
    Some("wav"),
    Some("flac"),
    Some("mp3"),
    Some("ogg"),
    Some("m4a"),
    Some("aiff"),
];

/// Arbitrary bytes as an audio file (the first byte picks the file name's extension):
/// decoded to the end, within tight limits, or refused with an error.
pub fn decode(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let cfg = DecodeConfig {
        sample_rate_hz: SampleRate::Hz(16000),
        max_duration_s: 30.0,
        max_channels: 8,
        extension_mismatch: crate::stage::decode::Mismatch::Warn,
        ..DecodeConfig::default()
    };
    let ext = EXTENSIONS[pick as usize % EXTENSIONS.len()].map(str::to_string);
    let Ok(mut s) = AudioStream::from_bytes(bytes.to_vec(), ext, &cfg) else {
        return;
    };
    let mut frames = 0usize;
    while let Ok(Some(block)) = s.next_block() {
        assert!(
            !block.is_empty() && !block[0].is_empty(),
            "blocks are never empty"
        );
        assert!(block.iter().all(|c| c.len() == block[0].len()));
        frames += block[0].len();
        // 30 s at 16 kHz plus resampler slack.
        assert!(frames <= 16000 * 31, "decoded past max_duration_s");
    }
}

/// Arbitrary float PCM (NaN, infinities, values far beyond full scale included) as a
/// 32-bit float WAV: the first byte picks the file's rate (including rates the resampler
/// must change by large ratios), the second its channel count, the rest are the samples'
/// bits. Decoded and resampled to 16 kHz, strictly (refused, or every block finite) and
/// with `on_damaged = "partial"` (every block finite and within range).
pub fn float_pcm(data: &[u8]) {
    const RATES: [u32; 8] = [8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000];
    let [pick, ch, samples @ ..] = data else {
        return;
    };
    let rate = RATES[*pick as usize % RATES.len()];
    let channels = u16::from(ch % 4) + 1;
    let n = samples.len() / 4 / channels as usize * channels as usize;
    let wav = float_wav(&samples[..n * 4], rate, channels);
    for damaged in [Damaged::Fail, Damaged::Partial] {
        let cfg = DecodeConfig {
            sample_rate_hz: SampleRate::Hz(16000),
            on_damaged: damaged,
            ..DecodeConfig::default()
        };
        let Ok(mut s) = AudioStream::from_bytes(wav.clone(), Some("wav".into()), &cfg) else {
            continue;
        };
        loop {
            match s.next_block() {
                Ok(Some(block)) => {
                    for v in block.iter().flatten() {
                        assert!(v.is_finite(), "a non-finite sample passed decode");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(damaged == Damaged::Fail, "partial decoding failed: {e}");
                    break;
                }
            }
        }
    }
}

/// A 32-bit float WAV (format 3) of raw little-endian sample bytes.
pub fn float_wav(sample_bytes: &[u8], rate: u32, channels: u16) -> Vec<u8> {
    let len = sample_bytes.len() as u32;
    let mut b = Vec::with_capacity(44 + sample_bytes.len());
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 4 * u32::from(channels)).to_le_bytes());
    b.extend_from_slice(&(4 * channels).to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(sample_bytes);
    b
}

/// A queue message: parsed, or refused with a reason; an accepted element id is safe.
pub fn message(data: &[u8]) {
    let klio = crate::source::klio::KlioConfig {
        input_location: "/data/".into(),
        ..Default::default()
    };
    let parsed = [event::parse(data), event::parse_klio(data, &klio)];
    for ev in parsed.into_iter().flatten() {
        if let Some(e) = &ev.element {
            assert!(event::check_element(e).is_ok());
        }
        let item = ev.item();
        assert!(!item.element.contains('/') && !item.element.starts_with('.'));
        if let Some(k) = &ev.klio {
            // What goes downstream decodes again, with this job at the end of the audit log.
            let again = crate::source::klio::intake(&crate::source::klio::output(k, &klio), &klio)
                .expect("output decodes");
            assert_eq!(again.element, k.element);
        }
    }
}

/// A config file: refused with an error, or valid and stable through `config show`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::from_toml(text) {
        let shown = cfg.to_toml();
        let again = Config::from_toml(&shown).expect("config show output loads");
        assert_eq!(
            again.output_hash(),
            cfg.output_hash(),
            "round trip keeps the hash"
        );
    }
}

/// Feature parameters for [`dsp_plan`].
#[derive(Debug, Clone)]
pub struct PlanParams {
    /// Audio rate.
    pub sample_rate_hz: u32,
    /// FFT length.
    pub n_fft: usize,
    /// Hop.
    pub hop_length: usize,
    /// Window length (0 = n_fft).
    pub win_length: usize,
    /// Mel bands.
    pub n_mels: usize,
    /// Lowest band edge.
    pub fmin_hz: f64,
    /// Highest band edge (negative = Nyquist).
    pub fmax_hz: f64,
    /// MFCCs.
    pub n_mfcc: usize,
    /// Centre padding.
    pub center: bool,
    /// Which features (bit mask over `Feature::ALL`).
    pub features: u32,
}

/// A feature plan with arbitrary parameters over `signal`: refused with an error, or every
/// output is finite with the shape the plan states. Returns whether features were computed.
pub fn dsp_plan(p: &PlanParams, signal: &[f32]) -> bool {
    let all = klio_dsp::Feature::ALL;
    let compute: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| p.features & (1 << i) != 0)
        .map(|(_, f)| f.name().to_string())
        .collect();
    if compute.is_empty() {
        return false;
    }
    let fc = FeaturesConfig {
        compute,
        n_fft: p.n_fft,
        hop_length: p.hop_length,
        win_length: (p.win_length > 0).then_some(p.win_length),
        n_mels: p.n_mels,
        fmin_hz: p.fmin_hz,
        fmax_hz: (p.fmax_hz >= 0.0).then_some(p.fmax_hz),
        n_mfcc: p.n_mfcc,
        center: p.center,
        ..FeaturesConfig::default()
    };
    let Ok(dsp) = fc.to_dsp(f64::from(p.sample_rate_hz.max(1))) else {
        return false;
    };
    let Ok(plan) = klio_dsp::FeaturePlan::new(&dsp) else {
        return false;
    };
    let plan = std::sync::Arc::new(plan);
    let Ok(out) = plan.compute(&[signal]) else {
        return false;
    };
    {
        for f in out {
            for ch in &f.channels {
                assert_eq!(ch.len(), f.frames * f.dim, "{:?}", f.feature);
                assert!(
                    ch.iter().all(|v| v.is_finite()),
                    "{:?} has non-finite values",
                    f.feature
                );
            }
        }
    }
    true
}

/// [`dsp_plan`] with its parameters and signal drawn from bytes (for libFuzzer).
pub fn dsp_plan_bytes(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as usize;
    let p = PlanParams {
        sample_rate_hz: [8000, 16000, 22050, 44100, 48000, 1, 100][data[0] as usize % 7],
        n_fft: u16_at(1),
        hop_length: u16_at(3),
        win_length: u16_at(5),
        n_mels: data[7] as usize,
        fmin_hz: f64::from(data[8]) * 100.0,
        fmax_hz: f64::from(data[9] as i8) * 200.0,
        n_mfcc: data[10] as usize,
        center: data[11] & 1 == 1,
        features: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
    };
    let signal: Vec<f32> = data[16..]
        .chunks(2)
        .map(|c| f32::from(i16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])) / 32768.0)
        .collect();
    dsp_plan(&p, &signal);
}
