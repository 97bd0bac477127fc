//! Frame-level descriptors as librosa's `feature` module defines them: RMS and zero-crossing
//! rate from the samples of a frame, and spectral centroid, bandwidth, roll-off and flatness
//! from its magnitude (or power) spectrum. Each writes one value per frame.

use crate::kernels::Kernels;

/// librosa's `rms`: `sqrt(mean(x^2))` over the frame.
pub(crate) fn rms(k: Kernels, frame: &[f32]) -> f32 {
    (k.dot(frame, frame) / frame.len() as f32).sqrt()
}

/// librosa's `zero_crossing_rate` (threshold 1e-10, zero counted as positive): sign changes
/// between neighbours, divided by the frame length.
pub(crate) fn zero_crossing_rate(frame: &[f32]) -> f32 {
    const THRESHOLD: f32 = 1e-10;
    let crossings = frame
        .windows(2)
        .filter(|w| (w[0] < -THRESHOLD) != (w[1] < -THRESHOLD))
        .count();
    crossings as f32 / frame.len() as f32
}

/// The normaliser librosa's `util.normalize(norm=1)` uses: the sum, or 1 when it is tiny.
fn l1_norm(k: Kernels, mag: &[f32]) -> f32 {
    let s = k.sum(mag);
    if s < f32::MIN_POSITIVE {
        1.0
    } else {
        s
    }
}

/// Spectral centroid and bandwidth (`p = 2`) of a magnitude spectrum over bin frequencies.
pub(crate) fn centroid_bandwidth(k: Kernels, mag: &[f32], freqs: &[f32]) -> (f32, f32) {
    let norm = l1_norm(k, mag);
    let centroid = k.dot(mag, freqs) / norm;
    let bandwidth = (k.weighted_sq_dev(mag, freqs, centroid) / norm).sqrt();
    (centroid, bandwidth)
}

/// The lowest bin frequency at which the cumulative magnitude reaches `percent` of the total.
/// The running sum is kept in f64 so ties with librosa's float64 reference stay rare.
pub(crate) fn rolloff(mag: &[f32], freqs: &[f32], percent: f64) -> f32 {
    let total: f64 = mag.iter().map(|&v| v as f64).sum();
    let threshold = percent * total;
    let mut acc = 0.0f64;
    for (&m, &f) in mag.iter().zip(freqs) {
        acc += m as f64;
        if acc >= threshold {
            return f;
        }
    }
    freqs.last().copied().unwrap_or(0.0)
}

/// Spectral flatness of a power spectrum: geometric over arithmetic mean of `max(amin, S)`.
/// `scratch` must be as long as `power`.
pub(crate) fn flatness(k: Kernels, power: &[f32], scratch: &mut [f32], amin: f32) -> f32 {
    scratch.copy_from_slice(power);
    k.clamp_affine(scratch, amin, 1.0, 0.0);
    let n = power.len() as f32;
    let amean = k.sum(scratch) / n;
    k.log_scaled(scratch, amin, 1.0, 0.0);
    let gmean = (k.sum(scratch) / n).exp();
    gmean / amean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_of_simple_spectra() {
        let k = Kernels::scalar();
        let freqs: Vec<f32> = (0..5).map(|i| i as f32 * 100.0).collect();
        let (c, b) = centroid_bandwidth(k, &[0.0, 0.0, 1.0, 0.0, 0.0], &freqs);
        assert_eq!((c, b), (200.0, 0.0));
        let (c, b) = centroid_bandwidth(k, &[1.0, 0.0, 0.0, 0.0, 1.0], &freqs);
        assert_eq!((c, b), (200.0, 200.0));
        assert_eq!(rolloff(&[1.0, 1.0, 1.0, 1.0, 0.0], &freqs, 0.85), 300.0);
        assert_eq!(rolloff(&[0.0; 5], &freqs, 0.85), 0.0);
        let mut s = [0.0; 4];
        assert!((flatness(k, &[2.0; 4], &mut s, 1e-10) - 1.0).abs() < 1e-6);
        assert!(flatness(k, &[1.0, 0.0, 0.0, 0.0], &mut s, 1e-10) < 1e-6);
        assert!((rms(k, &[3.0, -3.0, 3.0, -3.0]) - 3.0).abs() < 1e-6);
        assert_eq!(
            zero_crossing_rate(&[1.0, -1.0, 0.0, -0.0, -1e-11, -1.0]),
            3.0 / 6.0
        );
    }
}
