//! Output file names: `<video stem>.mp3` in the output folder, `name (2).mp3`
//! when taken, and nothing a server or a hostile file name says can make us
//! write outside that folder.

use std::path::{Path, PathBuf};

/// A safe file stem from an original file name (the system's one MP3
/// name rule, [`contract::names::mp3_stem`]).
pub fn safe_stem(original: &str) -> String {
    contract::names::mp3_stem(original)
}

/// A path in `dir` for the MP3 of `original` that neither exists nor is
/// being downloaded (`.part`): `name.mp3`, `name (2).mp3`, ...
pub fn unique_mp3_path(dir: &Path, original: &str) -> PathBuf {
    let stem = safe_stem(original);
    (1..)
        .map(|n| {
            let name = if n == 1 {
                format!("{stem}.mp3")
            } else {
                format!("{stem} ({n}).mp3")
            };
            dir.join(name)
        })
        .find(|path| !path.exists() && !part_path(path).exists())
        .unwrap_or_else(|| dir.join(format!("{stem}.mp3")))
}

/// Where a download is written until it is complete.
pub fn part_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    final_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_keep_spaces_and_unicode() {
        assert_eq!(safe_stem("My Holiday 2024.mp4"), "My Holiday 2024");
        assert_eq!(safe_stem("Grüße – 東京.mkv"), "Grüße – 東京");
        assert_eq!(safe_stem("archive.tar.gz"), "archive.tar");
    }

    #[test]
    fn stems_never_leave_the_folder() {
        assert_eq!(safe_stem("../../etc/passwd.mp4"), "passwd");
        assert_eq!(safe_stem("..\\..\\win.ini"), "win");
        assert_eq!(safe_stem(".."), "audio");
        assert_eq!(safe_stem("../"), "audio");
        assert_eq!(safe_stem(".hidden.mp4"), "hidden");
        assert_eq!(safe_stem("a:b*c?.mov"), "a_b_c_");
        assert_eq!(safe_stem("line\nbreak.mp4"), "line_break");
        assert_eq!(safe_stem(""), "audio");
        let long = "é".repeat(300);
        assert!(safe_stem(&long).len() <= contract::names::MAX_STEM_BYTES);
    }

    #[test]
    fn taken_names_get_a_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = unique_mp3_path(dir.path(), "song.mp4");
        assert_eq!(first, dir.path().join("song.mp3"));
        std::fs::write(&first, b"x").expect("write");
        let second = unique_mp3_path(dir.path(), "song.mov");
        assert_eq!(second, dir.path().join("song (2).mp3"));
        std::fs::write(part_path(&second), b"x").expect("write");
        assert_eq!(
            unique_mp3_path(dir.path(), "song.avi"),
            dir.path().join("song (3).mp3")
        );
    }

    #[test]
    fn part_files_sit_next_to_the_final_name() {
        assert_eq!(
            part_path(Path::new("/out/a b.mp3")),
            Path::new("/out/a b.mp3.part")
        );
    }
}
