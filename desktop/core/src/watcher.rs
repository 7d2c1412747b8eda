//! Finding finished videos in the watched folder: change events from the OS
//! (debounced) wake a scan, a periodic rescan catches what network shares
//! never report, and a file counts as finished only once its size and
//! modification time stayed the same for the settle time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use notify_debouncer_mini::{DebouncedEvent, Debouncer, new_debouncer};
use tokio::sync::Notify;

use crate::error::Error;
use crate::filters::is_candidate;

/// A file as one scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

/// Lists candidate files under `dir` (blocking: call from a blocking
/// thread). `skip` is a folder left out (the output folder, when it lies
/// inside the watched one).
pub fn scan(dir: &Path, recursive: bool, extensions: &[String], skip: Option<&Path>) -> Vec<Seen> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if recursive && !hidden && Some(path.as_path()) != skip {
                    folders.push(path);
                }
                continue;
            }
            if !is_candidate(&path, extensions) {
                continue;
            }
            // Follows symlinks: a linked video is still a video.
            if let Some(seen) = stat(&path) {
                found.push(seen);
            }
        }
    }
    found
}

/// Size and modification time of a regular file.
pub fn stat(path: &Path) -> Option<Seen> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Some(Seen {
        path: path.to_owned(),
        size: meta.len(),
        mtime_ns,
    })
}

/// Tracks files between scans and says when each one has settled.
#[derive(Debug, Default)]
pub struct Settler {
    watching: HashMap<PathBuf, (Seen, Instant)>,
    /// Files already handed out, with the state they were handed out in.
    handed_out: HashMap<PathBuf, (u64, i64)>,
}

impl Settler {
    /// Takes one scan's files; returns those unchanged for `settle`, each
    /// once per (size, mtime).
    pub fn observe(&mut self, now: Instant, files: Vec<Seen>, settle: Duration) -> Vec<Seen> {
        let present: std::collections::HashSet<PathBuf> =
            files.iter().map(|f| f.path.clone()).collect();
        self.watching.retain(|path, _| present.contains(path));
        self.handed_out.retain(|path, _| present.contains(path));
        let mut ready = Vec::new();
        for file in files {
            if self.handed_out.get(&file.path) == Some(&(file.size, file.mtime_ns)) {
                continue;
            }
            match self.watching.get(&file.path) {
                Some((before, since)) if *before == file => {
                    if now.duration_since(*since) >= settle {
                        self.watching.remove(&file.path);
                        self.handed_out
                            .insert(file.path.clone(), (file.size, file.mtime_ns));
                        ready.push(file);
                    }
                }
                _ => {
                    self.watching.insert(file.path.clone(), (file, now));
                }
            }
        }
        ready
    }

    /// Files seen but not settled yet: the next scan should come soon.
    pub fn has_unsettled(&self) -> bool {
        !self.watching.is_empty()
    }

    /// The files still changing (or not unchanged for long enough yet).
    pub fn unsettled(&self) -> impl Iterator<Item = &Seen> {
        self.watching.values().map(|(seen, _)| seen)
    }

    /// Lets a handed-out file be handed out again (it could not be read).
    pub fn forget(&mut self, path: &Path) {
        self.handed_out.remove(path);
    }
}

/// OS change events for a folder, debounced, turned into wake-ups.
pub struct FolderWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl FolderWatch {
    pub fn start(dir: &Path, recursive: bool, wake: std::sync::Arc<Notify>) -> Result<Self, Error> {
        let mut debouncer = new_debouncer(
            Duration::from_millis(300),
            move |result: Result<Vec<DebouncedEvent>, notify::Error>| {
                if result.is_ok() {
                    wake.notify_one();
                }
            },
        )?;
        let mode = if recursive {
            notify::RecursiveMode::Recursive
        } else {
            notify::RecursiveMode::NonRecursive
        };
        debouncer.watcher().watch(dir, mode)?;
        Ok(FolderWatch {
            _debouncer: debouncer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn seen(path: &str, size: u64, mtime_ns: i64) -> Seen {
        Seen {
            path: path.into(),
            size,
            mtime_ns,
        }
    }

    #[test]
    fn a_file_is_ready_only_after_it_stopped_changing_for_the_settle_time() {
        let settle = Duration::from_secs(3);
        let start = Instant::now();
        let mut settler = Settler::default();
        assert!(
            settler
                .observe(start, vec![seen("/v/a.mp4", 10, 1)], settle)
                .is_empty()
        );
        // Still growing: the clock starts again.
        let later = start + Duration::from_secs(2);
        assert!(
            settler
                .observe(later, vec![seen("/v/a.mp4", 20, 2)], settle)
                .is_empty()
        );
        let not_yet = later + Duration::from_secs(2);
        assert!(
            settler
                .observe(not_yet, vec![seen("/v/a.mp4", 20, 2)], settle)
                .is_empty()
        );
        assert!(settler.has_unsettled());
        let settled = later + Duration::from_secs(3);
        assert_eq!(
            settler.observe(settled, vec![seen("/v/a.mp4", 20, 2)], settle),
            vec![seen("/v/a.mp4", 20, 2)]
        );
        // Handed out once.
        let again = settled + Duration::from_secs(10);
        assert!(
            settler
                .observe(again, vec![seen("/v/a.mp4", 20, 2)], settle)
                .is_empty()
        );
        assert!(!settler.has_unsettled());
    }

    #[test]
    fn a_file_changed_after_it_was_taken_is_taken_again_once_settled() {
        let settle = Duration::from_secs(1);
        let t = Instant::now();
        let mut settler = Settler::default();
        settler.observe(t, vec![seen("/v/a.mp4", 1, 1)], settle);
        assert_eq!(
            settler
                .observe(t + settle, vec![seen("/v/a.mp4", 1, 1)], settle)
                .len(),
            1
        );
        settler.observe(t + settle * 2, vec![seen("/v/a.mp4", 2, 2)], settle);
        assert_eq!(
            settler
                .observe(t + settle * 3, vec![seen("/v/a.mp4", 2, 2)], settle)
                .len(),
            1
        );
    }

    #[test]
    fn scans_take_media_files_and_skip_partial_ones_and_the_output_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("a.mp4"), b"x").expect("write");
        std::fs::write(root.join("b.mp4.part"), b"x").expect("write");
        std::fs::write(root.join("notes.txt"), b"x").expect("write");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/c.mkv"), b"x").expect("write");
        std::fs::create_dir(root.join("out")).expect("mkdir");
        std::fs::write(root.join("out/d.mp4"), b"x").expect("write");
        let extensions = Settings::default().extensions;
        let names = |files: Vec<Seen>| {
            let mut names: Vec<String> = files
                .iter()
                .map(|f| {
                    f.path
                        .strip_prefix(root)
                        .expect("inside")
                        .display()
                        .to_string()
                })
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(scan(root, false, &extensions, None)), vec!["a.mp4"]);
        assert_eq!(
            names(scan(root, true, &extensions, Some(&root.join("out")))),
            vec!["a.mp4", "sub/c.mkv"]
        );
    }
}
