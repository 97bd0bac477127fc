//! The example configs in config/examples/ validate and produce the shapes their comments
//! promise on a real 16 kHz recording (37141 samples); an item that does not fit the feature
//! memory budget spills to disk and still writes the same arrays.

use std::path::Path;

use crate::common::*;

const XYLOFON: &str = "wav_s16_16k_mono_sound-icons-xylofon.wav";
const SAMPLES: usize = 37141;

fn run(dir: &Path, config: &str, out: &str) -> std::path::PathBuf {
    let src = real(XYLOFON);
    let (code, s) = process(
        dir,
        &[src.to_str().unwrap(), "--config", config, "--out", out],
    );
    assert_eq!((code, count(&s, "done")), (0, 1), "{config}: {s}");
    item_dirs(&dir.join(out)).remove(0)
}

#[test]
fn example_configs_give_the_documented_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, Vec<usize>); 5] = [
        ("logmel-16k.toml", "log_mel", vec![80, 1 + SAMPLES / 160]),
        // 44.1 kHz: resampled to ceil(37141 * 44100 / 16000) samples.
        ("logmel-44k.toml", "log_mel", vec![128, 1 + 102370 / 512]),
        ("mfcc.toml", "mfcc", vec![20, 1 + 51195 / 512]),
        ("whisper.toml", "whisper_log_mel", vec![80, SAMPLES / 160]),
        (
            "kaldi-fbank.toml",
            "fbank",
            vec![80, 1 + (SAMPLES - 400) / 160],
        ),
    ];
    for (i, (config, feature, shape)) in cases.into_iter().enumerate() {
        let o = klio(
            dir.path(),
            &["config", "validate", "--config", &example(config)],
        );
        assert!(o.status.success(), "{config}: {}", stderr(&o));
        let item = run(dir.path(), &example(config), &format!("out{i}"));
        let (got, data) = read_npy(&item.join(format!("{feature}.npy")));
        assert_eq!(got, shape, "{config}");
        assert!(data.iter().all(|v| v.is_finite()), "{config}");
        let listed = std::fs::read_dir(&item).unwrap().count();
        assert_eq!(listed, 2, "{config}: only {feature}.npy and meta.json");
    }
}

#[test]
fn an_item_over_the_memory_budget_spills_and_writes_the_same_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(example("logmel-16k.toml")).unwrap();
    let all = base.replace(
        "compute = [\"log_mel\"]",
        "compute = [\"log_mel\", \"mel\", \"mfcc\", \"spectral_centroid\"]",
    );
    std::fs::write(dir.path().join("mem.toml"), &all).unwrap();
    std::fs::write(
        dir.path().join("spill.toml"),
        format!("{all}\n[run]\nfeature_memory_mb = 0\n"),
    )
    .unwrap();
    let a = run(dir.path(), "mem.toml", "mem");
    let b = run(dir.path(), "spill.toml", "spill");
    for f in ["log_mel", "mel", "mfcc", "spectral_centroid"] {
        let name = format!("{f}.npy");
        assert_eq!(read_npy(&a.join(&name)), read_npy(&b.join(&name)), "{f}");
    }
    assert!(
        !dir.path().join("spill/.klio-tmp").exists(),
        "spill files removed"
    );
}

/// The output hash of every example config (and of the built-in defaults) is pinned: a
/// change here reprocesses every user's finished items, so it must be deliberate (bump
/// `ALGORITHM_VERSION` and these values together). Tool and model file identities, which
/// differ by machine, are not part of `output_hash`.
#[test]
fn example_config_hashes_are_pinned() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut got: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let (cfg, _) = klio_edge::config::Config::load(Some(&p), &[]).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, cfg.output_hash())
        })
        .collect();
    got.sort();
    got.insert(
        0,
        (
            "(defaults)".into(),
            klio_edge::config::Config::default().output_hash(),
        ),
    );
    let want = PINNED_HASHES;
    let got_text: Vec<String> = got
        .iter()
        .map(|(n, h)| format!("(\"{n}\", \"{h}\"),"))
        .collect();
    assert_eq!(
        got.iter()
            .map(|(n, h)| (n.as_str(), h.as_str()))
            .collect::<Vec<_>>(),
        want.to_vec(),
        "config hashes changed; if deliberate, pin:\n{}",
        got_text.join("\n")
    );
}

// Changed deliberately with ALGORITHM_VERSION 3 (the resampler, MP4 edit lists); the
// binary-item config (exec-checksum) kept its hash.
const PINNED_HASHES: &[(&str, &str)] = &[
    ("(defaults)", "783d0e6caafd98b4"),
    ("exec-checksum.toml", "2d68814ded1362fd"),
    ("exec-ffmpeg.toml", "babbfcbb0bc38b47"),
    ("kaldi-fbank.toml", "a588e5d0c57eca37"),
    ("logmel-16k.toml", "41f9169969266eee"),
    ("logmel-44k.toml", "232eed857a5e0b39"),
    ("mfcc.toml", "bcdc471ff5fd5464"),
    ("serve-inbox.toml", "41f9169969266eee"),
    ("serve-nats.toml", "41f9169969266eee"),
    ("serve-pubsub.toml", "41f9169969266eee"),
    ("vad-batched.toml", "4494d5af79ad0a48"),
    ("vad.toml", "f90da41739e0cfc1"),
    ("whisper.toml", "f69770c73ca2d84e"),
];
