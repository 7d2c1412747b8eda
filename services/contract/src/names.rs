//! Names and header text made from what users send (a file name, an
//! email): the MP3's name, a form of it that is safe to paste into a shell,
//! and text that is safe in a mail header; the one rule for every part
//! that names an MP3 (converter, gateway, mailer, desktop app). Nothing a user writes can add a
//! directory, a header line, a command or an encoded-word.

/// The longest MP3 name stem kept, in characters: names stay readable and
/// headers (`Content-Disposition`) stay small.
pub const MAX_STEM_CHARS: usize = 120;

/// The longest MP3 name stem kept, in bytes, well under the common 255-byte
/// file name limit (a stem of 120 four-byte characters would pass it).
pub const MAX_STEM_BYTES: usize = 180;

/// The MP3's name for an original file name: [`mp3_stem`] and `.mp3`. The
/// converter stores the MP3 under it, the download and the mail offer it,
/// the desktop app saves it so (numbered when taken).
pub fn mp3_name(original: &str) -> String {
    format!("{}.mp3", mp3_stem(original))
}

/// An original file name's stem, safe as a file name anywhere: no
/// directories, no control or reserved characters, no leading dots, at most
/// [`MAX_STEM_CHARS`] characters and [`MAX_STEM_BYTES`] bytes; `audio` when
/// nothing is left.
pub fn mp3_stem(original: &str) -> String {
    let base = original.rsplit(['/', '\\']).next().unwrap_or(original);
    let stem = match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    };
    let cleaned: String = stem
        .chars()
        .filter(|c| !is_invisible_control(*c))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let mut stem = String::new();
    for c in cleaned
        .trim()
        .trim_start_matches('.')
        .trim()
        .chars()
        .take(MAX_STEM_CHARS)
    {
        if stem.len() + c.len_utf8() > MAX_STEM_BYTES {
            break;
        }
        stem.push(c);
    }
    // A cut may end on a space or a dot: `talk .mp3` reads as a mistake.
    let stem = stem.trim_end_matches([' ', '.']).to_owned();
    if stem.is_empty() {
        "audio".to_owned()
    } else {
        stem
    }
}

/// `name` with nothing a shell would act on: letters, digits, `.`, `_` and
/// `-` only (anything else becomes `_`), never starting with `-`; for the
/// commands a mail suggests.
pub fn shell_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches(['-', '.']);
    let stem = safe.strip_suffix(".mp3").unwrap_or(safe);
    if stem.chars().all(|c| c == '_' || c == '.') {
        "audio.mp3".to_owned()
    } else {
        safe.to_owned()
    }
}

/// Characters that change how text around them is shown without being
/// seen: bidirectional overrides and marks (which can show `gpj.exe` as
/// `exe.jpg`), and line and paragraph separators (which can start a fake
/// line in a mail). Removed from every file name the system takes.
fn is_invisible_control(c: char) -> bool {
    matches!(
        c,
        '\u{200E}' | '\u{200F}' | '\u{061C}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}' | '\u{0085}'
    )
}

/// A file name as the system keeps it: the name a user sent without
/// control characters (line breaks become spaces) and without the
/// invisible ones that reorder or break what is shown.
pub fn clean_file_name(name: &str) -> String {
    name.chars()
        .filter(|c| !is_invisible_control(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A file name as a mail shows it: nothing in it that a mail program turns
/// into a link. A word that looks like an address (`https://...`,
/// `www.`, `host.example/path`) gets its dots and `://` bracketed, as
/// security mailing lists write indicators: `hxxps[://]victim-corp[.]example/x`.
pub fn defanged(name: &str) -> String {
    let clean = clean_file_name(name);
    clean
        .split(' ')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let looks_like_link = lower.contains("://")
                || lower.starts_with("www.")
                || lower.contains('@')
                || (lower.contains('/')
                    && lower
                        .split('/')
                        .next()
                        .is_some_and(|host| host.contains('.')));
            if looks_like_link {
                word.replace("://", "[://]")
                    .replace("http", "hxxp")
                    .replace("HTTP", "HXXP")
                    .replace('.', "[.]")
                    .replace('@', "[at]")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` fit for a mail header such as the Subject: on one line (control
/// characters become spaces), at most `max_chars` (then `…`), and with no
/// `=?` that a mail client would read as the start of an encoded-word (a
/// word joiner goes between, so the text is encoded as it is).
pub fn header_text(text: &str, max_chars: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace("=?", "=\u{2060}?");
    let mut capped: String = line.chars().take(max_chars).collect();
    if line.chars().count() > max_chars {
        capped.push('…');
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mp3_name_keeps_the_stem_and_nothing_dangerous() {
        assert_eq!(mp3_name("holiday.mp4"), "holiday.mp3");
        assert_eq!(mp3_name("../../etc/passwd.mkv"), "passwd.mp3");
        assert_eq!(mp3_name("C:\\videos\\talk.avi"), "talk.mp3");
        assert_eq!(mp3_name(".hidden"), "hidden.mp3");
        assert_eq!(mp3_name("a\r\nb\u{1b}[31m.mp4"), "a__b_[31m.mp3");
        assert_eq!(mp3_name(""), "audio.mp3");
        assert_eq!(mp3_name("Grüße aus Köln.mov"), "Grüße aus Köln.mp3");
        let long = mp3_name(&format!("{}.mp4", "x".repeat(5000)));
        assert_eq!(long.chars().count(), MAX_STEM_CHARS + 4);
        assert_eq!(mp3_name("already.mp3"), "already.mp3", "idempotent");
    }

    #[test]
    fn shell_safe_names_carry_no_shell_syntax() {
        assert_eq!(shell_safe("`id`.mp3"), "_id_.mp3");
        assert_eq!(shell_safe("a\".mp3"), "a_.mp3");
        assert_eq!(shell_safe("$(rm -rf ~).mp3"), "__rm_-rf___.mp3");
        assert_eq!(shell_safe("-rf.mp3"), "rf.mp3");
        assert_eq!(shell_safe("Köln.mp3"), "K_ln.mp3");
        assert_eq!(shell_safe("'''.mp3"), "audio.mp3");
    }

    #[test]
    fn a_cut_never_leaves_a_space_before_the_extension() {
        let name = format!("{} convertis pour toi.mp4", "x".repeat(MAX_STEM_CHARS - 10));
        let stem = mp3_stem(&name);
        assert!(!stem.ends_with(' ') && !stem.ends_with('.'), "{stem:?}");
    }

    #[test]
    fn file_names_lose_what_hides_or_reorders_text() {
        assert_eq!(clean_file_name("\u{202E}gpj.exe.mp4"), "gpj.exe.mp4");
        assert_eq!(
            clean_file_name("talk\u{2028}Download: http://evil.example.mp4"),
            "talkDownload: http://evil.example.mp4"
        );
        assert_eq!(clean_file_name("a\r\nb.mp4"), "a  b.mp4");
        assert_eq!(clean_file_name("\u{2066}x\u{2069}\u{200F}.mkv"), "x.mkv");
        assert_eq!(
            clean_file_name("Grüße aus Köln – 東京.mp4"),
            "Grüße aus Köln – 東京.mp4"
        );
    }

    #[test]
    fn mails_show_no_link_a_file_name_carries() {
        let phishing = "URGENT - payroll account locked. Verify within 24h at https://victim-corp-payroll.example/verify.mp4";
        let shown = defanged(phishing);
        assert!(
            !shown.contains("https://") && !shown.contains(".example/"),
            "{shown}"
        );
        assert!(
            shown.contains("hxxps[://]victim-corp-payroll[.]example/verify[.]mp4"),
            "{shown}"
        );
        assert_eq!(
            defanged("www.evil.example.mp4"),
            "www[.]evil[.]example[.]mp4"
        );
        assert_eq!(defanged("evil.example/x.mp4"), "evil[.]example/x[.]mp4");
        assert_eq!(
            defanged("me@evil.example.mp4"),
            "me[at]evil[.]example[.]mp4"
        );
        // Ordinary names stay as they are.
        assert_eq!(defanged("holiday clip.final.mp4"), "holiday clip.final.mp4");
        assert_eq!(defanged("Q3 results.mp4"), "Q3 results.mp4");
    }

    #[test]
    fn header_text_is_one_short_line_without_encoded_words() {
        assert_eq!(header_text("a\r\nBcc: x@y", 100), "a  Bcc: x@y");
        assert_eq!(header_text(&"y".repeat(10), 4), "yyyy…");
        let spoof = header_text("=?UTF-8?B?SGk=?=", 100);
        assert!(!spoof.contains("=?"), "{spoof}");
    }
}
