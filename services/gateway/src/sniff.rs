//! Recognises uploads that are clearly not media from their first bytes:
//! text (HTML, JSON, plain), still images and archives. Anything else is
//! let through; the converter has the final word on what it can decode.

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
];

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
            b"",
        ];
        for bytes in cases {
            assert_eq!(not_media(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn a_character_cut_by_the_prefix_is_still_text() {
        let mut bytes = b"na\xc3\xafve ".repeat(10);
        bytes.push(0xc3);
        assert_eq!(not_media(&bytes), Some("text"));
    }
}
