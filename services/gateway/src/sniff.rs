//! Tells uploads that cannot be media from their first bytes: text (HTML,
//! JSON, plain), still images, archives and programs by their own
//! signatures, and anything else that starts like no audio or video
//! container or stream people upload (random bytes). The converter has the
//! final word on what it can decode; this keeps what is certainly not media
//! from being stored at all.

/// How many leading bytes the decision needs (fewer when the file is shorter).
pub const SNIFF_LEN: usize = 512;

/// Signatures of formats that are never audio or video.
const SIGNATURES: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"%PDF-", "PDF document"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\xfd7zXZ\0", "xz archive"),
    (b"BZh", "bzip2 archive"),
    (b"\x28\xb5\x2f\xfd", "zstd archive"),
    (b"\x7fELF", "program (ELF)"),
    (b"MZ", "program (Windows)"),
    (b"\xca\xfe\xba\xbe", "program (Mach-O)"),
    (b"\xcf\xfa\xed\xfe", "program (Mach-O)"),
    (b"SQLite format 3\0", "SQLite database"),
];

/// How audio and video files people upload begin: containers and raw
/// streams FFmpeg reads (checked after the signatures above).
fn is_known_media(prefix: &[u8]) -> bool {
    let at = |offset: usize, magic: &[u8]| prefix.get(offset..offset + magic.len()) == Some(magic);
    // MP4, MOV, 3GP, M4A and their relatives: a box type at offset 4.
    let iso_box = [
        b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
    ]
    .iter()
    .any(|kind| at(4, *kind));
    // MPEG transport streams: sync bytes every 188 bytes (or 192 on Blu-ray).
    let transport = (at(0, b"\x47") && (prefix.len() < 189 || at(188, b"\x47")))
        || (at(4, b"\x47") && (prefix.len() < 197 || at(196, b"\x47")));
    // MPEG audio (MP3, MP2) and ADTS AAC: a frame sync.
    let frame_sync = prefix.len() >= 2 && prefix[0] == 0xff && prefix[1] & 0xe0 == 0xe0;
    iso_box
        || transport
        || frame_sync
        || [
            &b"\x1a\x45\xdf\xa3"[..], // Matroska, WebM
            b"RIFF",                  // AVI, WAV
            b"RIFX",
            b"RF64",
            b"FORM", // AIFF
            b"FLV",
            b"\0\0\x01\xba", // MPEG program stream
            b"\0\0\x01\xb3", // MPEG video
            b"OggS",         // Ogg (Vorbis, Opus, Theora)
            b"fLaC",
            b"ID3",                              // MP3 and AAC with ID3 tags
            b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", // ASF: WMV, WMA
            b"#!AMR",
            b".RMF",             // RealMedia
            b"\x0b\x77",         // AC-3
            b"\x7f\xfe\x80\x01", // DTS
            b"caff",             // Core Audio
            b"\x06\x0e\x2b\x34", // MXF
            b"wvpk",             // WavPack
            b"MAC ",             // Monkey's Audio
            b"TTA1",
            b"MPCK", // Musepack
            b"MP+",
            b".snd", // Sun audio
            b"nut/multimedia container",
            b"DKIF", // IVF
        ]
        .iter()
        .any(|magic| prefix.starts_with(magic))
}

/// What the file clearly is, when that is not media; `None` lets it through.
pub fn not_media(prefix: &[u8]) -> Option<&'static str> {
    if let Some((_, what)) = SIGNATURES
        .iter()
        .find(|(magic, _)| prefix.starts_with(magic))
    {
        return Some(what);
    }
    if looks_like_text(prefix) {
        let start = prefix
            .strip_prefix(b"\xef\xbb\xbf")
            .unwrap_or(prefix)
            .trim_ascii_start();
        return Some(match start.first() {
            Some(b'<') => "HTML or XML text",
            Some(b'{' | b'[') => "JSON text",
            _ => "text",
        });
    }
    if !prefix.is_empty() && !is_known_media(prefix) {
        return Some("data that starts like no audio or video format");
    }
    None
}

/// True when `prefix` is non-empty UTF-8 text without control characters
/// other than whitespace. Every container format starts with binary bytes
/// (box sizes, NULs, EBML ids, version bytes), so none passes for text.
fn looks_like_text(prefix: &[u8]) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let text = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        // The prefix may end inside a multi-byte character.
        Err(err) if err.error_len().is_none() => {
            match std::str::from_utf8(&prefix[..err.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_images_and_archives_are_not_media() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello world\n", "text"),
            (b"  <!DOCTYPE html><html>", "HTML or XML text"),
            (b"\xef\xbb\xbf{\"a\": 1}", "JSON text"),
            ("caf\u{e9} au lait".as_bytes(), "text"),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "PNG image"),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", "JPEG image"),
            (b"GIF89a\x01\0", "GIF image"),
            (b"PK\x03\x04\x14\0", "ZIP archive"),
            (b"\x1f\x8b\x08\0", "gzip archive"),
            (b"%PDF-1.7\n", "PDF document"),
            (b"7z\xbc\xaf\x27\x1c\0\x04", "7z archive"),
            (b"\x7fELF\x02\x01\x01", "program (ELF)"),
            (
                b"\x93\x1d\xa7\x04\xfe\x00\x51",
                "data that starts like no audio or video format",
            ),
        ];
        for (bytes, what) in cases {
            assert_eq!(not_media(bytes), Some(*what), "{bytes:?}");
        }
    }

    #[test]
    fn containers_pass() {
        let cases: &[&[u8]] = &[
            b"\0\0\0\x20ftypisom\0\0\x02\0",
            b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81",
            b"RIFF\x10\x79\x04\0AVI LIST",
            b"FLV\x01\x05\0\0\0\x09",
            b"\0\0\x01\xba\x44\0",
            b"OggS\0\x02\0\0",
            b"ID3\x04\0\0\0\0\x01\x02",
            b"\xff\xfb\x90\x64\0",
            b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9",
            b"fLaC\0\0\0\x22",
            b"",
        ];
        for bytes in cases {
            assert_eq!(not_media(bytes), None, "{bytes:?}");
        }
    }

    /// Every sample of the test media (MP4, MOV, AVI, FLV, Matroska, MPEG-PS,
    /// WMV) starts like media.
    #[test]
    fn every_sample_video_passes() {
        for path in common::testing::media_files() {
            let bytes = std::fs::read(&path).expect("read sample");
            let prefix = &bytes[..bytes.len().min(SNIFF_LEN)];
            assert_eq!(not_media(prefix), None, "{}", path.display());
        }
    }

    #[test]
    fn a_character_cut_by_the_prefix_is_still_text() {
        let mut bytes = b"na\xc3\xafve ".repeat(10);
        bytes.push(0xc3);
        assert_eq!(not_media(&bytes), Some("text"));
    }
}
