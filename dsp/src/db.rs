//! Power to decibels, as librosa's `power_to_db`.

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
    let amin = cfg.amin;
    let ref_value = match cfg.reference {
        DbReference::Value(v) => v.abs(),
        DbReference::Max => values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    };
    let offset = 10.0 * ref_value.max(amin).log10();
    let mut max_db = f32::NEG_INFINITY;
    for v in values.iter_mut() {
        *v = 10.0 * v.max(amin).log10() - offset;
        max_db = max_db.max(*v);
    }
    if let Some(top_db) = cfg.top_db {
        let floor = max_db - top_db;
        for v in values.iter_mut() {
            *v = v.max(floor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
