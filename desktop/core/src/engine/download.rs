//! Bringing finished MP3s home: `.part` files, Range resume, no overwrite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::ProgressReporter;
use super::{Shared, backoff, emit_item, fail, pause, set_online, signed_in, signed_out};
use crate::error::Error;
use crate::names::{part_path, unique_mp3_path};
use crate::settings::AfterDone;
use crate::store::{Item, Stage};

pub(super) async fn download_loop(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        if !signed_in(&shared).await {
            return;
        }
        let out_dir = shared.settings.read().await.out_dir.clone();
        let next = match &out_dir {
            Some(_) => shared
                .store
                .in_stage(Stage::Downloading)
                .await
                .ok()
                .and_then(|items| items.into_iter().next()),
            None => None,
        };
        let (Some(item), Some(out_dir)) = (next, out_dir) else {
            if !pause(&shared, &shared.wake_download, Duration::from_secs(5)).await {
                return;
            }
            continue;
        };
        let result = tokio::select! {
            _ = shared.stop.cancelled() => return,
            result = download(&shared, &item, &out_dir) => result,
        };
        match result {
            Ok(()) => {
                attempt = 0;
                set_online(&shared, true);
            }
            Err(Error::Unauthorized) => signed_out(&shared),
            Err(err) if err.is_transient() => {
                tracing::info!(file = %item.name, error = %err, "download interrupted; will resume");
                set_online(&shared, !matches!(err, Error::Offline(_)));
                if !pause(&shared, &shared.wake_download, backoff(attempt)).await {
                    return;
                }
                attempt += 1;
            }
            Err(Error::Server { status: 404, .. }) => {
                let reason = crate::plain::Plain {
                    message: "The MP3 is no longer on the server. Retry converts the video \
                              again."
                        .into(),
                    detail: None,
                };
                fail(&shared, &item, &reason, true).await;
            }
            Err(err) => fail(&shared, &item, &crate::plain::explain(&err), true).await,
        }
    }
}

async fn download(shared: &Arc<Shared>, item: &Item, out_dir: &Path) -> Result<(), Error> {
    let job_id = item
        .job_id
        .clone()
        .ok_or_else(|| Error::Invalid("no job for this file".into()))?;
    let watch_dir = shared.settings.read().await.watch_dir.clone();
    let dir = mp3_dir(out_dir, watch_dir.as_deref(), &item.path);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(Error::io(format!("creating {}", dir.display())))?;
    // A new version of a video replaces the MP3 of the earlier one: the MP3
    // folder mirrors the watched one, as a user expects.
    let earlier = shared
        .store
        .earlier_version(&item.path, item.id)
        .await?
        .filter(|earlier| {
            earlier
                .mp3_path
                .as_deref()
                .is_some_and(|mp3| mp3.parent() == Some(dir.as_path()) && mp3.exists())
        });
    let target = match (&item.mp3_path, &earlier) {
        (Some(path), _) => path.clone(),
        (None, Some(earlier)) => {
            let path = earlier.mp3_path.clone().unwrap_or_default();
            shared.store.set_mp3_path(item.id, &path).await?;
            path
        }
        (None, None) => {
            let path = unique_mp3_path(&dir, &item.name);
            shared.store.set_mp3_path(item.id, &path).await?;
            path
        }
    };
    let part = part_path(&target);
    let api = shared.api.read().await.clone();
    let reporter = ProgressReporter::start(shared, item, Stage::Downloading);
    let result = api.download_mp3(&job_id, &part, reporter.recorder()).await;
    drop(reporter);
    let size = result?;
    if size == 0 || !looks_like_mp3(&part).await {
        tokio::fs::remove_file(&part).await.ok();
        return Err(Error::Invalid(
            "the server sent something that is not an MP3".into(),
        ));
    }
    let replaced = match earlier
        .as_ref()
        .filter(|e| e.mp3_path.as_ref() == Some(&target))
    {
        Some(earlier) => replace_earlier(shared, earlier, &target).await,
        None => false,
    };
    // Someone may have created the name meanwhile: never overwrite.
    let target = if !replaced && tokio::fs::try_exists(&target).await.unwrap_or(false) {
        let path = unique_mp3_path(&dir, &item.name);
        shared.store.set_mp3_path(item.id, &path).await?;
        path
    } else {
        target
    };
    tokio::fs::rename(&part, &target)
        .await
        .map_err(Error::io(format!("writing {}", target.display())))?;
    shared.store.set_stage(item.id, Stage::Done, 1.0).await?;
    if replaced {
        shared
            .store
            .set_note(item.id, Some("Replaced the MP3 of the earlier version"))
            .await?;
    }
    tracing::info!(file = %item.name, mp3 = %target.display(), "MP3 ready");
    let name = target
        .strip_prefix(out_dir)
        .unwrap_or(&target)
        .display()
        .to_string();
    shared.batcher.lock().await.finished(Instant::now(), &name);
    after_done(shared, item).await;
    emit_item(shared, item.id).await;
    Ok(())
}

/// The folder an item's MP3 goes to: the output folder, plus the item's
/// subfolder under the watched folder (so two `clip.mp4` in different
/// folders stay apart, and say where they came from).
fn mp3_dir(out_dir: &Path, watch_dir: Option<&Path>, video: &Path) -> PathBuf {
    let sub = watch_dir
        .and_then(|watch| video.parent()?.strip_prefix(watch).ok())
        .map(|sub| {
            sub.components()
                .filter_map(|part| match part {
                    std::path::Component::Normal(name) => Some(name),
                    _ => None,
                })
                .collect::<PathBuf>()
        })
        .unwrap_or_default();
    out_dir.join(sub)
}

/// Moves the earlier version's MP3 to the Trash so the new one takes its
/// name; false (the new one gets a name of its own) when it cannot go.
async fn replace_earlier(shared: &Shared, earlier: &Item, mp3: &Path) -> bool {
    match to_trash(mp3).await {
        Ok(()) => {
            let note = "Replaced by a newer version (the old MP3 is in the Trash)";
            if shared.store.set_note(earlier.id, Some(note)).await.is_ok() {
                emit_item(shared, earlier.id).await;
            }
            true
        }
        Err(err) => {
            tracing::warn!(mp3 = %mp3.display(), error = %err, "cannot move the earlier MP3 to the Trash; keeping it");
            false
        }
    }
}

/// Moves `path` to the desktop's Trash (a blocking call, off the runtime).
async fn to_trash(path: &Path) -> Result<(), String> {
    let path = path.to_owned();
    match tokio::task::spawn_blocking(move || trash::delete(&path)).await {
        Ok(moved) => moved.map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// An MP3 starts with an ID3 tag or an MPEG audio frame sync.
async fn looks_like_mp3(path: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return false;
    };
    let mut head = [0u8; 3];
    if file.read_exact(&mut head).await.is_err() {
        return false;
    }
    &head == b"ID3" || (head[0] == 0xFF && head[1] & 0xE0 == 0xE0)
}

/// Moves the source video to the Trash, or to a folder, when the user
/// asked for it, and says so on its row. Never deleted for good: what the
/// Trash refuses stays where it is.
async fn after_done(shared: &Shared, item: &Item) {
    let action = shared.settings.read().await.after_done.clone();
    let note = match &action {
        AfterDone::Keep => return,
        AfterDone::Delete => match to_trash(&item.path).await {
            Ok(()) => "Video moved to the Trash".to_owned(),
            Err(err) => {
                tracing::warn!(file = %item.path.display(), error = %err, "cannot move the video to the Trash");
                "The video could not be moved to the Trash, so it was kept".to_owned()
            }
        },
        AfterDone::MoveTo(dir) => {
            let name = item.path.file_name().unwrap_or_default();
            let moved = match tokio::fs::create_dir_all(dir).await {
                Ok(()) => tokio::fs::rename(&item.path, dir.join(name)).await,
                Err(err) => Err(err),
            };
            match moved {
                Ok(()) => format!("Video moved to {}", dir.display()),
                Err(err) => {
                    tracing::warn!(file = %item.path.display(), error = %err, "could not move the source video");
                    format!(
                        "The video could not be moved to {}, so it was kept",
                        dir.display()
                    )
                }
            }
        }
    };
    if let Err(err) = shared.store.set_note(item.id, Some(&note)).await {
        tracing::warn!(error = %err, "recording what happened to the video");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subfolder_of_the_watched_folder_is_kept_in_the_mp3_folder() {
        let out = Path::new("/music");
        let watch = Some(Path::new("/videos"));
        assert_eq!(
            mp3_dir(out, watch, Path::new("/videos/a/b/clip.mp4")),
            Path::new("/music/a/b")
        );
        assert_eq!(mp3_dir(out, watch, Path::new("/videos/clip.mp4")), out);
        // Dropped from elsewhere: straight into the MP3 folder.
        assert_eq!(mp3_dir(out, watch, Path::new("/tmp/clip.mp4")), out);
        assert_eq!(mp3_dir(out, None, Path::new("/videos/a/clip.mp4")), out);
    }
}
