//! Power to decibels, as librosa's `power_to_db`.

use crate::kernels::Kernels;

/// The reference power that maps to 0 dB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DbReference {
    /// A fixed value (librosa's default is 1.0).
    Value(f32),
    /// The largest value of the whole array (`ref=np.max`).
    Max,
}

/// `power_to_db` parameters; defaults are librosa's (`ref` 1.0, `amin` 1e-10, `top_db` 80).
#[derive(Debug, Clone, PartialEq)]
pub struct DbConfig {
    /// Reference power. Default `Value(1.0)`.
    pub reference: DbReference,
    /// Floor applied before the log. Default 1e-10.
    pub amin: f32,
    /// Clamp to `max - top_db`; `None` disables. Default `Some(80.0)`.
    pub top_db: Option<f32>,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            reference: DbReference::Value(1.0),
            amin: 1e-10,
            top_db: Some(80.0),
        }
    }
}

/// Converts a whole power array to dB in place:
/// `10 log10(max(amin, S)) - 10 log10(max(amin, ref))`, then clamps to `max - top_db`.
///
/// The reference (`Max`) and the clamp are taken over the whole slice, so call it once on
/// everything that librosa would see as one array (all frames, all channels).
pub fn power_to_db_in_place(values: &mut [f32], cfg: &DbConfig) {
    power_to_db_with(Kernels::active(), values, cfg)
}

/// [`power_to_db_in_place`] with the given kernels: one read for the maximum (when the
/// reference or `top_db` needs it), one read and write for the clamped dB values.
pub fn power_to_db_with(k: Kernels, values: &mut [f32], cfg: &DbConfig) {
    let (offset, lo) = levels(k, values, cfg);
    k.log_scaled_clamped(values, cfg.amin, DB_PER_LN, -offset, lo);
}

/// [`power_to_db_in_place`] of `src` into `dst` (as long as `src`): two reads of `src` and
/// one write of `dst`, where copying and converting in place reads the array three times
/// and writes it twice.
///
/// # Panics
/// If the lengths differ.
pub fn power_to_db_into(src: &[f32], dst: &mut [f32], cfg: &DbConfig) {
    let k = Kernels::active();
    let (offset, lo) = levels(k, src, cfg);
    k.log_scaled_into(src, dst, cfg.amin, DB_PER_LN, -offset, lo);
}

/// The dB offset of the reference and the clamp level (`-inf` without `top_db`) for
/// `values`: the clamp level is the dB value of the maximum through the same vector log as
/// every value (the largest result's wherever that log is monotonic; at worst an ulp of a
/// dB value off it).
fn levels(k: Kernels, values: &[f32], cfg: &DbConfig) -> (f32, f32) {
    let needs_max = cfg.reference == DbReference::Max || cfg.top_db.is_some();
    let max = if needs_max { k.max(values) } else { 0.0 };
    let ref_value = match cfg.reference {
        DbReference::Value(v) => v.abs(),
        DbReference::Max => max,
    };
    let offset = db_offset(ref_value, cfg.amin);
    let lo = match cfg.top_db {
        Some(top_db) => {
            let mut top = [max];
            k.log_scaled(&mut top, cfg.amin, DB_PER_LN, -offset) - top_db
        }
        None => f32::NEG_INFINITY,
    };
    (offset, lo)
}

/// `10 / ln(10)`: decibels per natural-log unit of power.
pub(crate) const DB_PER_LN: f32 = (10.0 / std::f64::consts::LN_10) as f32;

/// `10 log10(max(ref, amin))`, the dB value subtracted from every entry.
pub(crate) fn db_offset(ref_value: f32, amin: f32) -> f32 {
    (10.0 * (ref_value.max(amin) as f64).log10()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_forms_match_the_definition() {
        let mut s = 7u32;
        let src: Vec<f32> = (0..10_007)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Powers over 16 decades, so the top_db clamp bites.
                10f32.powf((s >> 8) as f32 / (1u32 << 24) as f32 * 16.0 - 12.0)
            })
            .collect();
        for cfg in [
            DbConfig::default(),
            DbConfig {
                reference: DbReference::Max,
                amin: 1e-10,
                top_db: Some(80.0),
            },
            DbConfig {
                reference: DbReference::Value(3.0),
                amin: 1e-5,
                top_db: None,
            },
        ] {
            // The definition in three passes: dB values, their maximum, the clamp.
            let k = Kernels::active();
            let ref_value = match cfg.reference {
                DbReference::Value(v) => v,
                DbReference::Max => k.max(&src),
            };
            let mut want = src.clone();
            let max_db = k.log_scaled(
                &mut want,
                cfg.amin,
                DB_PER_LN,
                -db_offset(ref_value, cfg.amin),
            );
            if let Some(top_db) = cfg.top_db {
                k.clamp_affine(&mut want, max_db - top_db, 1.0, 0.0);
                assert!(want.contains(&(max_db - top_db)), "the clamp bites");
            }
            let mut in_place = src.clone();
            power_to_db_in_place(&mut in_place, &cfg);
            assert_eq!(in_place, want, "{cfg:?}");
            let mut into = vec![0.0; src.len()];
            power_to_db_into(&src, &mut into, &cfg);
            assert_eq!(into, want, "{cfg:?}");
        }
    }

    #[test]
    fn matches_librosa_definition() {
        let mut v = vec![1.0, 0.1, 1e-12, 100.0];
        power_to_db_in_place(&mut v, &DbConfig::default());
        let want = [0.0, -10.0, -60.0, 20.0]; // -100 dB floored to 20 - 80
        for (g, w) in v.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{v:?}");
        }
        let mut v = vec![1.0, 0.1, 100.0];
        power_to_db_in_place(
            &mut v,
            &DbConfig {
                reference: DbReference::Max,
                amin: 1e-10,
                top_db: None,
            },
        );
        assert!((v[2]).abs() < 1e-5 && (v[0] + 20.0).abs() < 1e-4 && (v[1] + 30.0).abs() < 1e-4);
    }
}
