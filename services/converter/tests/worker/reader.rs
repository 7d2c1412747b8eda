//! The streaming reader over GridFS chunks, against the real server: it
//! reads and seeks exactly as the file itself does, fetches only what the
//! reads touch, copes with files smaller than a chunk, fails at a missing
//! chunk, and every sample in `media/` converts from GridFS to the same
//! bytes as from disk.

use std::io::{Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::AsyncWriteExt;
use mongodb::bson::{Bson, doc, oid::ObjectId};
use mongodb::gridfs::FilesCollectionDocument;

use converter::source::{FetchStats, GridFsReader};
use converter::transcode::{self, Options, ReadSeek, Source};

use crate::harness::World;

/// Stores `bytes` with chunks of `chunk_size` bytes and returns its file
/// document, as the worker finds it.
async fn store(world: &World, bytes: &[u8], chunk_size: u32) -> FilesCollectionDocument {
    let bucket = common::gridfs::bucket(&world.mongo.videos);
    let id = ObjectId::new();
    let mut upload = bucket
        .open_upload_stream("test.bin")
        .id(Bson::ObjectId(id))
        .chunk_size_bytes(chunk_size)
        .await
        .expect("upload");
    upload.write_all(bytes).await.expect("write");
    upload.close().await.expect("close");
    common::gridfs::find(&bucket, id)
        .await
        .expect("find")
        .expect("stored")
}

fn reader(world: &World, file: &FilesCollectionDocument) -> (GridFsReader, Arc<FetchStats>) {
    let stats = Arc::new(FetchStats::default());
    let reader = GridFsReader::new(
        tokio::runtime::Handle::current(),
        &world.mongo.videos,
        file,
        Arc::clone(&stats),
    );
    (reader, stats)
}

/// Up to `n` bytes from where `from` is, however its reads are cut.
fn take(from: &mut dyn Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    from.take(n as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// Bytes that differ from chunk to chunk, so a chunk read in the wrong
/// place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_seeks_give_exactly_the_bytes_of_the_file() {
    let world = World::new().await;
    // 10 full chunks of 1000 bytes and a short eleventh.
    let bytes = pattern(10_500);
    let file = store(&world, &bytes, 1000).await;
    let (mut stream, stats) = reader(&world, &file);
    tokio::task::spawn_blocking(move || {
        let mut local = Cursor::new(bytes.clone());
        // Each step on both: a seek, then a read of some length.
        let steps = [
            (SeekFrom::Start(0), 10),
            (SeekFrom::Start(995), 10),      // across a chunk boundary
            (SeekFrom::Current(2000), 1500), // a jump, then over two chunks
            (SeekFrom::End(-5), 100),        // the last bytes, short read
            (SeekFrom::Start(4000), 0),
            (SeekFrom::Start(10_500), 10), // at the end: nothing
            (SeekFrom::Start(20_000), 10), // past the end: nothing
            (SeekFrom::Current(-15_000), 2500),
            (SeekFrom::Start(1000), 1000), // exactly one chunk
        ];
        for (at, len) in steps {
            let ours = stream.seek(at).expect("seek");
            assert_eq!(ours, local.seek(at).expect("seek"), "{at:?}");
            assert_eq!(
                take(&mut stream, len).expect("read"),
                take(&mut local, len).expect("read"),
                "{len} bytes after {at:?}"
            );
        }
        let before_start = stream.seek(SeekFrom::Current(-1_000_000));
        assert_eq!(
            before_start.expect_err("before the start").kind(),
            ErrorKind::InvalidInput
        );
        // The whole file from the start, straight on.
        stream.seek(SeekFrom::Start(0)).expect("rewind");
        assert_eq!(take(&mut stream, usize::MAX).expect("read all"), bytes);
    })
    .await
    .expect("reader thread");
    assert!(stats.damage().is_none() && stats.failure().is_none());
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_straight_on_fetches_ahead_and_a_jump_fetches_one_chunk() {
    let world = World::new().await;
    let bytes = pattern(10_500);
    let file = store(&world, &bytes, 1000).await;

    let (straight, stats) = reader(&world, &file);
    let read = tokio::task::spawn_blocking(move || {
        let mut straight = straight;
        take(&mut straight, usize::MAX)
    })
    .await
    .expect("reader thread")
    .expect("read");
    assert_eq!(read, bytes);
    // 11 chunks in fetches of 1, 2, 4 and the 4 left: each byte once.
    assert_eq!(stats.chunks.load(Ordering::Relaxed), 11);
    assert_eq!(stats.round_trips.load(Ordering::Relaxed), 4);
    assert_eq!(stats.bytes.load(Ordering::Relaxed), 10_500);

    let (jumping, stats) = reader(&world, &file);
    let read = tokio::task::spawn_blocking(move || {
        let mut jumping = jumping;
        let mut read = Vec::new();
        // A demuxer picking a few samples here and there.
        for at in [7_100, 2_050, 9_990] {
            jumping.seek(SeekFrom::Start(at)).expect("seek");
            read.extend(take(&mut jumping, 5)?);
        }
        // Back into a chunk already fetched: served from the cache.
        jumping.seek(SeekFrom::Start(7_000)).expect("seek");
        read.extend(take(&mut jumping, 5)?);
        Ok::<_, std::io::Error>(read)
    })
    .await
    .expect("reader thread")
    .expect("read");
    let expected: Vec<u8> = [7_100, 2_050, 9_990, 7_000]
        .iter()
        .flat_map(|&at| bytes[at..at + 5].to_vec())
        .collect();
    assert_eq!(read, expected);
    assert_eq!(stats.chunks.load(Ordering::Relaxed), 3, "chunks 7, 2, 9");
    assert_eq!(stats.round_trips.load(Ordering::Relaxed), 3);
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_smaller_than_one_chunk_and_empty_ones_read_whole() {
    let world = World::new().await;
    let small = pattern(300);
    // The worker's chunk size (the driver's default, 255 KiB).
    let file = store(&world, &small, 255 * 1024).await;
    let empty = store(&world, &[], 255 * 1024).await;
    let (one, stats) = reader(&world, &file);
    let (none, empty_stats) = reader(&world, &empty);
    let (read, nothing) = tokio::task::spawn_blocking(move || {
        let (mut one, mut none) = (one, none);
        let read = take(&mut one, usize::MAX).expect("read");
        one.seek(SeekFrom::End(-10)).expect("seek");
        let tail = take(&mut one, 100).expect("read tail");
        assert_eq!(tail, small[290..]);
        (read, take(&mut none, 100).expect("read empty"))
    })
    .await
    .expect("reader thread");
    assert_eq!(read, pattern(300));
    assert_eq!(stats.round_trips.load(Ordering::Relaxed), 1);
    assert!(nothing.is_empty());
    assert_eq!(empty_stats.round_trips.load(Ordering::Relaxed), 0);
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_missing_mid_file_fails_there_and_again_at_once() {
    let world = World::new().await;
    let bytes = pattern(10_500);
    let file = store(&world, &bytes, 1000).await;
    world
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("fs.chunks")
        .delete_one(doc! { "files_id": file.id.clone(), "n": 5 })
        .await
        .expect("remove chunk 5");
    let (stream, stats) = reader(&world, &file);
    let (before, error, trips, again) = tokio::task::spawn_blocking({
        let stats = Arc::clone(&stats);
        move || {
            let mut stream = stream;
            // Read as the demuxer does, in pieces, until it fails.
            let mut before = Vec::new();
            let mut piece = [0u8; 700];
            let error = loop {
                match stream.read(&mut piece) {
                    Ok(0) => panic!("read to the end past a missing chunk"),
                    Ok(n) => before.extend_from_slice(&piece[..n]),
                    Err(error) => break error,
                }
            };
            let trips = stats.round_trips.load(Ordering::Relaxed);
            stream.seek(SeekFrom::Start(5_500)).expect("seek");
            let again = take(&mut stream, 10).expect_err("still missing");
            (before, error, trips, again)
        }
    })
    .await
    .expect("reader thread");
    // Everything before the missing chunk reads, the damage shows where
    // it is.
    assert_eq!(before, bytes[..5000]);
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("chunk 5"), "{error}");
    assert_eq!(again.kind(), ErrorKind::InvalidData);
    // Asked again, the broken chunk is not fetched again.
    assert_eq!(stats.round_trips.load(Ordering::Relaxed), trips);
    assert!(stats.damage().is_some_and(|d| d.contains("chunk 5")));
    assert!(stats.failure().is_none(), "damage, not a failed fetch");
    world.clean_up(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_in_media_converts_from_gridfs_to_the_bytes_it_gives_from_disk() {
    let world = World::new().await;
    let out = tempfile::tempdir().expect("tempdir");
    let files = common::testing::media_files();
    assert!(files.len() >= 8, "{files:?}");
    let mut converted = 0;
    for path in files {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).expect("read sample");
        let stored = store(&world, &bytes, 255 * 1024).await;
        let (stream, _) = reader(&world, &stored);
        let (from_disk, from_gridfs) = (out.path().join("disk.mp3"), out.path().join("gridfs.mp3"));
        let (disk, gridfs) = tokio::task::spawn_blocking({
            let (path, name) = (path.clone(), name.clone());
            let (from_disk, from_gridfs) = (from_disk.clone(), from_gridfs.clone());
            move || {
                let options = Options::default();
                let disk = transcode::convert_source_within(
                    Source::File(&path),
                    &from_disk,
                    &options,
                    "sample",
                    None,
                    &mut |_| {},
                );
                let open =
                    move || -> std::io::Result<Box<dyn ReadSeek>> { Ok(Box::new(stream.reopen())) };
                let gridfs = transcode::convert_source_within(
                    Source::Stream {
                        open: &open,
                        name: &name,
                    },
                    &from_gridfs,
                    &options,
                    "sample",
                    None,
                    &mut |_| {},
                );
                (disk, gridfs)
            }
        })
        .await
        .expect("conversion thread");
        match (disk, gridfs) {
            (Ok(disk), Ok(gridfs)) => {
                assert_eq!(disk.duration_s, gridfs.duration_s, "{name}");
                assert!(
                    std::fs::read(&from_disk).expect("disk mp3")
                        == std::fs::read(&from_gridfs).expect("gridfs mp3"),
                    "{name}: the MP3s differ"
                );
                converted += 1;
            }
            // The samples without audio fail the same way either way.
            (Err(disk), Err(gridfs)) => {
                assert_eq!(disk.to_string(), gridfs.to_string(), "{name}");
                assert!(
                    matches!(gridfs, transcode::TranscodeError::NoAudio),
                    "{name}: {gridfs}"
                );
            }
            (disk, gridfs) => panic!("{name}: from disk {disk:?}, from GridFS {gridfs:?}"),
        }
        let _ = std::fs::remove_file(&from_disk);
        let _ = std::fs::remove_file(&from_gridfs);
    }
    // Six of the eight samples have audio.
    assert_eq!(converted, 6);
    world.clean_up(&[]).await;
}
