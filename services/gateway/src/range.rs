//! The `Range` request header (RFC 9110 §14), for single byte ranges.
//!
//! Anything this server does not serve as a range (another unit, several
//! ranges, a malformed value) is ignored and the whole file is sent, as
//! the RFC allows; only a well-formed range outside the file is an error.

/// What to send for a request on a file of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole file, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */length`.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a file of `length` bytes.
pub fn parse(header: Option<&str>, length: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if length == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Partial {
                start: length.saturating_sub(n),
                end: length - 1,
            },
            None => ByteRange::Full,
        },
        // `bytes=a-`: from a to the end.
        (false, true) => match number(first) {
            Some(start) if start >= length => ByteRange::Unsatisfiable,
            Some(start) => ByteRange::Partial {
                start,
                end: length - 1,
            },
            None => ByteRange::Full,
        },
        // `bytes=a-b`.
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if end < start => ByteRange::Full,
            (Some(start), Some(_)) if start >= length => ByteRange::Unsatisfiable,
            (Some(start), Some(end)) => ByteRange::Partial {
                start,
                end: end.min(length - 1),
            },
            _ => ByteRange::Full,
        },
        (true, true) => ByteRange::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteRange, parse};

    fn partial(start: u64, end: u64) -> ByteRange {
        ByteRange::Partial { start, end }
    }

    #[test]
    fn no_header_or_other_units_mean_the_whole_file() {
        assert_eq!(parse(None, 100), ByteRange::Full);
        assert_eq!(parse(Some("items=0-5"), 100), ByteRange::Full);
    }

    #[test]
    fn closed_ranges_are_clamped_to_the_file() {
        assert_eq!(parse(Some("bytes=0-0"), 100), partial(0, 0));
        assert_eq!(parse(Some("bytes=10-19"), 100), partial(10, 19));
        assert_eq!(parse(Some("bytes=90-500"), 100), partial(90, 99));
        assert_eq!(parse(Some(" bytes= 5 - 6 "), 100), partial(5, 6));
    }

    #[test]
    fn open_ranges_run_to_the_end() {
        assert_eq!(parse(Some("bytes=0-"), 100), partial(0, 99));
        assert_eq!(parse(Some("bytes=99-"), 100), partial(99, 99));
    }

    #[test]
    fn suffix_ranges_take_the_last_bytes() {
        assert_eq!(parse(Some("bytes=-10"), 100), partial(90, 99));
        assert_eq!(parse(Some("bytes=-500"), 100), partial(0, 99));
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        assert_eq!(parse(Some("bytes=100-"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_are_ignored() {
        for header in [
            "bytes=",
            "bytes=-",
            "bytes=abc",
            "bytes=5-2",
            "bytes=x-5",
            "bytes=+5-",
            "bytes=0-1,5-6",
        ] {
            assert_eq!(parse(Some(header), 100), ByteRange::Full, "{header}");
        }
    }
}
