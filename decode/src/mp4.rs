//! The edit list of an MP4's audio track (`moov/trak/edts/elst`), which symphonia's MP4
//! reader does not apply: AAC encoders prime the stream with 1024 or 2112 samples and pad
//! its end to a whole frame, and the edit list says which samples are the audio. ffmpeg (and
//! so librosa, through audioread or soundfile's ffmpeg fallback) decode only those.
//!
//! A small box walker over the file: every size is checked against its parent, depth and
//! entry counts are bounded (the walk has a fixed depth), so a hostile file costs a few
//! reads and no large allocation.

use std::io::{Read, Seek, SeekFrom};

/// The part of the track to present, in units of the track's timescale (for audio,
/// usually its sample rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// Units to drop from the start (encoder delay).
    pub skip: u64,
    /// Units to keep after those (the rest is padding), when the edit says.
    pub keep: Option<u64>,
    /// The track's timescale (units per second).
    pub timescale: u32,
}

impl Edit {
    /// `units` of this edit in frames at `rate` Hz.
    pub fn frames(&self, units: u64, rate: u32) -> u64 {
        (u128::from(units) * u128::from(rate) / u128::from(self.timescale)) as u64
    }
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// One box header at `at`: (type, start of the body, end of the box).
fn header<R: Read + Seek>(r: &mut R, at: u64, end: u64) -> Option<([u8; 4], u64, u64)> {
    if at + 8 > end {
        return None;
    }
    r.seek(SeekFrom::Start(at)).ok()?;
    let mut h = [0u8; 16];
    r.read_exact(&mut h[..8]).ok()?;
    let size32 = u32_at(&h, 0)?;
    let kind: [u8; 4] = h[4..8].try_into().ok()?;
    let (body, size) = match size32 {
        0 => (at + 8, end - at),
        1 => {
            r.read_exact(&mut h[8..16]).ok()?;
            (at + 16, u64_at(&h, 8)?)
        }
        n => (at + 8, u64::from(n)),
    };
    let box_end = at.checked_add(size)?;
    (size >= body - at && box_end <= end).then_some((kind, body, box_end))
}

/// The children of a container box, as (type, body start, end).
fn children<R: Read + Seek>(r: &mut R, start: u64, end: u64) -> Vec<([u8; 4], u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    while let Some(h) = header(r, at, end) {
        at = h.2;
        out.push(h);
        if out.len() > 4096 {
            break;
        }
    }
    out
}

fn read_body<R: Read + Seek>(r: &mut R, start: u64, end: u64, cap: u64) -> Option<Vec<u8>> {
    let len = (end - start).min(cap);
    r.seek(SeekFrom::Start(start)).ok()?;
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b).ok()?;
    Some(b)
}

fn find<'a>(boxes: &'a [([u8; 4], u64, u64)], kind: &[u8; 4]) -> Option<&'a ([u8; 4], u64, u64)> {
    boxes.iter().find(|b| &b.0 == kind)
}

/// A timescale from an `mvhd` or `mdhd` body (version 0 or 1).
fn timescale(body: &[u8]) -> Option<u32> {
    match body.first()? {
        0 => u32_at(body, 12),
        1 => u32_at(body, 20),
        _ => None,
    }
    .filter(|&t| t > 0)
}

/// The edit of the first sound track of the MP4 in `r` (`len` bytes), if it has one that
/// trims: one media edit (after at most one empty edit, which shifts rather than trims and
/// is ignored), at normal rate.
pub fn audio_edit<R: Read + Seek>(r: &mut R, len: u64) -> Option<Edit> {
    let top = children(r, 0, len);
    let moov = find(&top, b"moov")?;
    let moov_boxes = children(r, moov.1, moov.2);
    let mvhd = find(&moov_boxes, b"mvhd")?;
    let movie_ts = timescale(&read_body(r, mvhd.1, mvhd.2, 64)?)?;
    for trak in moov_boxes.iter().filter(|b| &b.0 == b"trak") {
        let trak_boxes = children(r, trak.1, trak.2);
        let mdia = find(&trak_boxes, b"mdia")?;
        let mdia_boxes = children(r, mdia.1, mdia.2);
        let hdlr = find(&mdia_boxes, b"hdlr")?;
        let hdlr_body = read_body(r, hdlr.1, hdlr.2, 32)?;
        if hdlr_body.get(8..12) != Some(b"soun".as_slice()) {
            continue;
        }
        let mdhd = find(&mdia_boxes, b"mdhd")?;
        let media_ts = timescale(&read_body(r, mdhd.1, mdhd.2, 64)?)?;
        let edts = find(&trak_boxes, b"edts")?;
        let edts_boxes = children(r, edts.1, edts.2);
        let elst = find(&edts_boxes, b"elst")?;
        let b = read_body(r, elst.1, elst.2, 4096)?;
        let version = *b.first()?;
        let count = u32_at(&b, 4)? as usize;
        let entry = if version == 1 { 20 } else { 12 };
        let mut media = Vec::new();
        for i in 0..count.min(8) {
            let at = 8 + i * entry;
            // A count larger than the box holds: the entries that are there.
            let (Some(duration), Some(time), Some(rate)) = (
                if version == 1 {
                    u64_at(&b, at)
                } else {
                    u32_at(&b, at).map(u64::from)
                },
                if version == 1 {
                    u64_at(&b, at + 8).map(|t| t as i64)
                } else {
                    u32_at(&b, at + 4).map(|t| i64::from(t as i32))
                },
                u32_at(&b, at + entry - 4),
            ) else {
                break;
            };
            if time == -1 {
                continue; // an empty edit: a delay, not a trim
            }
            if rate != 0x0001_0000 {
                return None; // dwell or speed-change edits: leave as decoded
            }
            media.push((duration, time));
        }
        let &[(duration, time)] = media.as_slice() else {
            return None;
        };
        let skip = u64::try_from(time).ok()?;
        let keep = (duration > 0)
            .then(|| (u128::from(duration) * u128::from(media_ts) / u128::from(movie_ts)) as u64);
        return (skip > 0 || keep.is_some()).then_some(Edit {
            skip,
            keep,
            timescale: media_ts,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    fn mp4(elst: &[u8]) -> Vec<u8> {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&44100u32.to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"soun");
        let mdia = [bx(b"mdhd", &mdhd), bx(b"hdlr", &hdlr)].concat();
        let trak = [bx(b"edts", &bx(b"elst", elst)), bx(b"mdia", &mdia)].concat();
        let moov = [bx(b"mvhd", &mvhd), bx(b"trak", &trak)].concat();
        [bx(b"ftyp", b"M4A \0\0\0\0"), bx(b"moov", &moov)].concat()
    }

    fn entry(duration: u32, time: i32) -> Vec<u8> {
        [
            duration.to_be_bytes(),
            time.to_be_bytes(),
            0x0001_0000u32.to_be_bytes(),
        ]
        .concat()
    }

    #[test]
    fn priming_and_padding_from_one_media_edit() {
        // 2 s in the movie's ms, from media time 1024 at 44.1 kHz.
        let elst = [vec![0, 0, 0, 0, 0, 0, 0, 1], entry(2000, 1024)].concat();
        let f = mp4(&elst);
        let got = audio_edit(&mut std::io::Cursor::new(&f), f.len() as u64);
        assert_eq!(
            got,
            Some(Edit {
                skip: 1024,
                keep: Some(88200),
                timescale: 44100
            })
        );
    }

    #[test]
    fn empty_edits_are_skipped_and_hostile_sizes_give_nothing() {
        let elst = [
            vec![0, 0, 0, 0, 0, 0, 0, 2],
            entry(500, -1),
            entry(1000, 2112),
        ]
        .concat();
        let f = mp4(&elst);
        let got = audio_edit(&mut std::io::Cursor::new(&f), f.len() as u64).unwrap();
        assert_eq!(got.skip, 2112);
        // A box claiming more bytes than the file has, or a count of 2^32 - 1 entries.
        let mut bad = f.clone();
        let at = bad.len() - 4;
        bad[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        let _ = audio_edit(&mut std::io::Cursor::new(&bad), bad.len() as u64);
        let mut huge = mp4(&[vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], entry(1, 1)].concat());
        let n = huge.len() as u64;
        assert!(audio_edit(&mut std::io::Cursor::new(&mut huge), n).is_some());
        assert_eq!(
            audio_edit(&mut std::io::Cursor::new(b"not an mp4"), 10),
            None
        );
    }
}
