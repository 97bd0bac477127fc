//! Analysis windows: periodic ("fftbins=True") Hann and Hamming as librosa's `get_window`
//! returns them, and Kaldi's symmetric Povey window.

/// The analysis window shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Periodic Hann: `0.5 - 0.5 cos(2 pi n / N)`.
    Hann,
    /// Periodic Hamming: `0.54 - 0.46 cos(2 pi n / N)`.
    Hamming,
    /// All ones.
    Rectangular,
    /// Kaldi's Povey window, symmetric: `(0.5 - 0.5 cos(2 pi n / (N - 1)))^0.85`.
    Povey,
}

impl WindowKind {
    /// Parses the names used in configuration files (`hann`, `hamming`, `rectangular`/`boxcar`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "hann" => Some(WindowKind::Hann),
            "hamming" => Some(WindowKind::Hamming),
            "rectangular" | "boxcar" | "ones" => Some(WindowKind::Rectangular),
            "povey" => Some(WindowKind::Povey),
            _ => None,
        }
    }
}

/// Returns the window of `win_length` samples, zero-padded on both sides to `n_fft`
/// (librosa's `pad_center`), computed in f64 and rounded to f32.
///
/// # Panics
/// If `win_length > n_fft` (plans validate this first).
pub fn window(kind: WindowKind, win_length: usize, n_fft: usize) -> Vec<f32> {
    assert!(win_length <= n_fft, "win_length must not exceed n_fft");
    let n = win_length as f64;
    let mut out = vec![0.0f32; n_fft];
    let offset = (n_fft - win_length) / 2;
    for i in 0..win_length {
        let phase = 2.0 * std::f64::consts::PI * i as f64 / n;
        let w = match kind {
            WindowKind::Hann => 0.5 - 0.5 * phase.cos(),
            WindowKind::Hamming => 0.54 - 0.46 * phase.cos(),
            WindowKind::Rectangular => 1.0,
            WindowKind::Povey if win_length == 1 => 1.0,
            WindowKind::Povey => {
                let a = 2.0 * std::f64::consts::PI * i as f64 / (n - 1.0);
                (0.5 - 0.5 * a.cos()).powf(0.85)
            }
        };
        out[offset + i] = w as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hann_is_periodic_and_centred() {
        let w = window(WindowKind::Hann, 4, 8);
        assert_eq!(w, vec![0.0, 0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0]);
        let w = window(WindowKind::Hann, 8, 8);
        assert_eq!(w[0], 0.0);
        assert!((w[4] - 1.0).abs() < 1e-7);
        assert!((w[2] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn povey_is_symmetric_kaldi() {
        let w = window(WindowKind::Povey, 5, 5);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[4], 0.0);
        assert!((w[2] - 1.0).abs() < 1e-7);
        assert!((w[1] - 0.5f64.powf(0.85) as f32).abs() < 1e-7);
        assert_eq!(w[1], w[3]);
    }

    #[test]
    fn names_parse() {
        assert_eq!(WindowKind::from_name("hann"), Some(WindowKind::Hann));
        assert_eq!(
            WindowKind::from_name("boxcar"),
            Some(WindowKind::Rectangular)
        );
        assert_eq!(WindowKind::from_name("kaiser"), None);
    }
}
