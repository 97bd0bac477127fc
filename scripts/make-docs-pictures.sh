#!/usr/bin/env bash
# Makes the README's pictures in docs/ with the code itself: processes the test corpus (its
# real recordings and its broken files, with Silero VAD), draws one spectrogram with
# `klio-edge plot`, writes the run report with `klio-edge report`, and screenshots the report's
# top in headless Chromium (Debian's chromium, as scripts/test.sh installs it).
#   scripts/make-docs-pictures.sh [path/to/klio-edge]   (default: target/release/klio-edge)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/klio-edge}
[ -x "$bin" ] || { echo "no $bin: cargo build --release first (or name a binary)" >&2; exit 2; }
[ -x /usr/bin/chromium ] || { echo "no /usr/bin/chromium: apt-get install chromium" >&2; exit 2; }
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/docs.toml" <<EOF
[decode]
sample_rate_hz = 16000
[features]
compute = ["log_mel", "mfcc", "rms"]
n_fft = 400
hop_length = 160
n_mels = 80
[[model]]
name = "vad"
path = "$(pwd)/models/silero_vad_openvino_16k.onnx"
backend = "tract"
sample_rate_hz = 16000
window_samples = 512
context_samples = 64
state = { shape = [2, 1, 128] }
output = "segments"
EOF
"$bin" --config "$work/docs.toml" process tests/corpus/real tests/corpus/bad --out "$work/out" -q || true
element=$(ls "$work/out" | grep '^wav_s16_16k_mono_asterisk-demo-congrats' | head -n 1)
mkdir -p docs
"$bin" plot "$element" --out "$work/out" --to docs/spectrogram.png --height 420
"$bin" report --out "$work/out" --to "$work/report.html" --items 12 -q
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --hide-scrollbars --window-size=1280,1500 \
  --screenshot="$(pwd)/docs/report.png" "file://$work/report.html" 2>/dev/null
echo "wrote docs/spectrogram.png and docs/report.png"
