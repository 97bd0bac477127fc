//! The fuzz targets of `fuzz/` (bodies in `klio_edge::fuzzing`) as property tests on stable
//! Rust: random bytes, and real files mutated (bytes flipped, cut short, spliced), for the
//! decoder front; hostile and random messages; random config text; random DSP parameters.
//! Cases per property: `PROPTEST_CASES` (default below). Crashes found by cargo-fuzz become
//! the inline regression cases at the end.

use klio_edge::fuzzing;
use proptest::prelude::*;

/// `PROPTEST_CASES`, else 256 per property.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn seeds() -> Vec<Vec<u8>> {
    [
        "wav_s16_16k_mono_sound-icons-xylofon.wav",
        "flac_s16_8k_mono_moh-reno-project-system.flac",
        "mp3_8k_mono_asterisk-demo-instruct.mp3",
        "oga_vorbis_8k_mono_freedesktop-phone-outgoing-busy.oga",
        "m4a_aac_44k1_stereo_sonic-pi-loop-tabla.m4a",
    ]
    .iter()
    .map(|n| {
        let mut b = std::fs::read(crate::common::real(n)).unwrap();
        // Keep cases quick: the headers and the first packets are where parsers break.
        b.truncate(48 * 1024);
        b
    })
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn float_pcm_of_any_value_decodes_or_is_refused(
        head in any::<[u8; 2]>(),
        // Bit patterns, so NaN, infinities, subnormals and 3e38 all come up.
        samples in proptest::collection::vec(any::<u32>(), 0..6000),
        huge in proptest::collection::vec(prop_oneof![Just(3e38f32), Just(-1e30f32), Just(1.5e6f32), any::<f32>()], 0..64),
    ) {
        let mut data = head.to_vec();
        for s in &samples {
            data.extend_from_slice(&s.to_le_bytes());
        }
        for v in &huge {
            data.extend_from_slice(&v.to_le_bytes());
        }
        fuzzing::float_pcm(&data);
    }

    #[test]
    fn decoder_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::decode(&data);
    }

    #[test]
    fn decoder_survives_mutated_real_files(
        which in 0usize..5,
        ext in any::<u8>(),
        flips in proptest::collection::vec((any::<u32>(), any::<u8>()), 1..16),
        cut in any::<u32>(),
    ) {
        let seeds = seeds();
        let mut b = seeds[which].clone();
        for (pos, val) in flips {
            let i = pos as usize % b.len();
            b[i] = val;
        }
        b.truncate(cut as usize % (b.len() + 1));
        let mut data = vec![ext];
        data.extend_from_slice(&b);
        fuzzing::decode(&data);
    }

    #[test]
    fn messages_are_parsed_or_refused(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::message(&data);
    }

    #[test]
    fn json_like_messages_are_parsed_or_refused(
        element in "[ -~]{0,40}",
        uri in "[ -~\\u{0}\\u{202e}]{0,80}",
        force in any::<bool>(),
    ) {
        let body = serde_json::json!({ "element": element, "uri": uri, "force": force });
        fuzzing::message(body.to_string().as_bytes());
    }

    #[test]
    fn config_text_is_loaded_or_refused(text in "[a-z_\\[\\]=\". 0-9\\n-]{0,300}") {
        fuzzing::config(text.as_bytes());
    }

    #[test]
    fn config_with_random_values_is_loaded_or_refused(
        n_fft in any::<i64>(), hop in any::<i64>(), mels in any::<i64>(), rate in any::<i64>(),
        top in any::<f64>(),
    ) {
        let text = format!(
            "[decode]\nsample_rate_hz = {rate}\n[features]\nn_fft = {n_fft}\nhop_length = {hop}\nn_mels = {mels}\ntop_db = {top:?}\n"
        );
        fuzzing::config(text.as_bytes());
    }

    #[test]
    fn dsp_plans_with_random_parameters(
        rate in prop_oneof![Just(8000u32), Just(16000), Just(22050), Just(44100), 1u32..200_000],
        n_fft in prop_oneof![0usize..5000, 2usize..600],
        hop in prop_oneof![0usize..3000, 1usize..300],
        win in prop_oneof![Just(0usize), 0usize..5000],
        n_mels in prop_oneof![0usize..300, 1usize..64],
        fmin in prop_oneof![-100.0f64..30_000.0, 0.0f64..500.0],
        fmax in prop_oneof![Just(-1.0f64), -1.0f64..30_000.0, 1000.0f64..4000.0],
        n_mfcc in prop_oneof![0usize..200, 1usize..20],
        center in any::<bool>(),
        features in any::<u32>(),
        signal in proptest::collection::vec(-1.0f32..1.0, 0..6000),
    ) {
        let p = fuzzing::PlanParams {
            sample_rate_hz: rate, n_fft, hop_length: hop, win_length: win, n_mels,
            fmin_hz: fmin, fmax_hz: fmax, n_mfcc, center, features,
        };
        fuzzing::dsp_plan(&p, &signal);
    }
}

#[test]
fn dsp_plan_from_bytes_handles_short_and_extreme_input() {
    fuzzing::dsp_plan_bytes(&[]);
    fuzzing::dsp_plan_bytes(&[0xff; 64]);
    fuzzing::dsp_plan_bytes(&[0; 64]);
}

#[test]
fn the_dsp_target_computes_a_typical_plan() {
    // The property above is not vacuous: valid parameters do reach the computation.
    let p = fuzzing::PlanParams {
        sample_rate_hz: 16000,
        n_fft: 400,
        hop_length: 160,
        win_length: 0,
        n_mels: 40,
        fmin_hz: 0.0,
        fmax_hz: -1.0,
        n_mfcc: 13,
        center: true,
        features: u32::MAX,
    };
    let signal: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.05).sin()).collect();
    assert!(fuzzing::dsp_plan(&p, &signal));
}

/// Regression (cargo-fuzz `decode`, 2026-11-25): a float WAV at 44.1 kHz with NaN and
/// infinite samples made rubato panic ("Imaginary part of first value was non-zero") while
/// resampling to 16 kHz. Now the item fails as corrupt, or decodes with zeros in their place
/// under `on_damaged = "partial"`.
#[test]
fn regression_non_finite_float_samples_do_not_reach_the_resampler() {
    let mut x: Vec<f32> = (0..8192).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
    x[100] = f32::NAN;
    x[4000] = f32::INFINITY;
    x[5000] = f32::NEG_INFINITY;
    let bytes = crate::common::wav::float32(&x, 44100);
    let mut data = vec![1u8]; // extension "wav"
    data.extend_from_slice(&bytes);
    fuzzing::decode(&data);

    let mut cfg = klio_edge::stage::decode::DecodeConfig {
        sample_rate_hz: klio_edge::stage::decode::SampleRate::Hz(16000),
        ..Default::default()
    };
    let mut s =
        klio_edge::stage::decode::AudioStream::from_bytes(bytes.clone(), Some("wav".into()), &cfg)
            .unwrap();
    let err = loop {
        match s.next_block() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("NaN samples were accepted"),
            Err(e) => break e,
        }
    };
    // The ledger records it as `corrupt`.
    let msg = err.to_string();
    assert_eq!(
        klio_edge::pipeline::ItemError::from(err).kind,
        klio_edge::pipeline::ErrorKind::Corrupt,
        "{msg}"
    );
    cfg.on_damaged = klio_edge::stage::decode::Damaged::Partial;
    let mut s =
        klio_edge::stage::decode::AudioStream::from_bytes(bytes, Some("wav".into()), &cfg).unwrap();
    while let Some(block) = s.next_block().unwrap() {
        assert!(block[0].iter().all(|v| v.is_finite()));
    }
    assert!(!s.info().warnings.is_empty());
}

/// Regression (hostile-input trial, 2026-12): a float WAV of constant 3e38 made rubato panic
/// (`synchro.rs:185`) when resampled 44.1 -> 22.05 kHz, killing the whole `process` run; at
/// the native rate it was "done" with every value at -100 dB. Now it fails as corrupt, or
/// decodes as silence under `on_damaged = "partial"`.
#[test]
fn regression_huge_float_samples_are_corrupt_not_a_resampler_panic() {
    let x = vec![3e38f32; 44100];
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let wav = fuzzing::float_wav(&bytes, 44100, 1);
    for rate in [
        klio_edge::stage::decode::SampleRate::Hz(22050),
        klio_edge::stage::decode::SampleRate::Native,
    ] {
        let mut cfg = klio_edge::stage::decode::DecodeConfig {
            sample_rate_hz: rate,
            ..Default::default()
        };
        let mut s = klio_edge::stage::decode::AudioStream::from_bytes(
            wav.clone(),
            Some("wav".into()),
            &cfg,
        )
        .unwrap();
        let err = loop {
            match s.next_block() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("3e38 samples were accepted"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("out-of-range"), "{err}");
        // The ledger records it as `corrupt`.
        let msg = err.to_string();
        assert_eq!(
            klio_edge::pipeline::ItemError::from(err).kind,
            klio_edge::pipeline::ErrorKind::Corrupt,
            "{msg}"
        );
        cfg.on_damaged = klio_edge::stage::decode::Damaged::Partial;
        let mut s = klio_edge::stage::decode::AudioStream::from_bytes(
            wav.clone(),
            Some("wav".into()),
            &cfg,
        )
        .unwrap();
        while let Some(block) = s.next_block().unwrap() {
            assert!(block[0].iter().all(|v| *v == 0.0));
        }
    }
    fuzzing::float_pcm(&[4, 0, 0, 0, 0x7f, 0x7f]);
}
