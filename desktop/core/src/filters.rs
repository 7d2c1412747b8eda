//! Which files in the watched folder are videos to convert, and which are
//! someone's unfinished download or temporary file.

use std::path::Path;

/// Name suffixes of downloads and copies still in progress.
const PARTIAL_SUFFIXES: &[&str] = &[".part", ".crdownload", ".download", ".tmp", ".partial"];

/// True when `path` looks like a finished media file the user wants
/// converted: a media extension from `extensions`, not hidden, not a partial
/// download or an editor's lock file.
pub fn is_candidate(path: &Path, extensions: &[String]) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if is_ignored_name(name) {
        return false;
    }
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    let ext = ext.to_ascii_lowercase();
    extensions
        .iter()
        .any(|wanted| wanted.eq_ignore_ascii_case(&ext))
}

/// Hidden files, lock files and the temporary names of browsers and sync
/// tools.
pub fn is_ignored_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || lower.starts_with(".syncthing.")
        || PARTIAL_SUFFIXES
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn candidate(name: &str) -> bool {
        is_candidate(Path::new(name), &Settings::default().extensions)
    }

    #[test]
    fn media_files_are_taken_whatever_the_case() {
        assert!(candidate("/v/clip.mp4"));
        assert!(candidate("/v/Holiday Film.MKV"));
        assert!(candidate("/v/東京.webm"));
    }

    #[test]
    fn partial_hidden_and_other_files_are_not() {
        for name in [
            "/v/clip.mp4.part",
            "/v/clip.mp4.crdownload",
            "/v/clip.mp4.download",
            "/v/clip.tmp",
            "/v/~$clip.mp4",
            "/v/.clip.mp4",
            "/v/.syncthing.clip.mp4.tmp",
            "/v/notes.txt",
            "/v/song.mp3",
            "/v/noextension",
        ] {
            assert!(!candidate(name), "{name}");
        }
    }

    #[test]
    fn the_extension_list_is_configurable() {
        let only_mkv = vec!["mkv".to_owned()];
        assert!(is_candidate(Path::new("/v/a.mkv"), &only_mkv));
        assert!(!is_candidate(Path::new("/v/a.mp4"), &only_mkv));
    }
}
