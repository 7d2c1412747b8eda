//! The video as the demuxer reads it: straight from GridFS, no spooled copy.
//! FFmpeg reads and seeks through [`GridFsReader`] (an `io::Read + Seek`
//! behind a custom AVIO context), which fetches only the chunks those reads
//! touch: with every stream but the chosen audio discarded, an indexed
//! container (MP4/MOV sample tables, AVI `idx1`) lets the demuxer seek past
//! the picture, so most of a typical video's chunks never leave MongoDB.
//! Matroska and WebM are read cluster by cluster, every chunk of them.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mongodb::bson::{Bson, Document, RawBsonRef, doc};
use mongodb::gridfs::FilesCollectionDocument;

/// At most this many chunks per round trip (GridFS chunks are 255 KiB). A
/// read that jumps fetches only the chunk it lands in; each further miss
/// straight after it doubles the fetch, up to this: a demuxer that reads a
/// small run of samples and jumps on costs one chunk, one that reads on
/// (Matroska, an audio file) soon fetches a megabyte per round trip.
const READ_AHEAD: u64 = 4;

/// Chunks kept for reads that come back: a demuxer reads its index first
/// (a fragmented MP4's every `moof`, each in the chunk that also holds the
/// audio before it), then the samples it points at. 8 MiB at most.
const CACHED_CHUNKS: usize = 32;

/// What one conversion fetched from MongoDB, and the first fetch error.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub bytes: AtomicU64,
    pub chunks: AtomicU64,
    pub round_trips: AtomicU64,
    /// Time spent waiting for fetches, in microseconds.
    pub fetch_micros: AtomicU64,
    /// A fetch that failed (MongoDB unreachable, a cursor cut off): the
    /// conversion failed because of it, and another attempt may succeed.
    failure: Mutex<Option<String>>,
    /// A chunk of the stored file missing or damaged: no attempt can mend
    /// that, the job fails.
    damage: Mutex<Option<String>>,
}

impl FetchStats {
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn fail(&self, reason: String) {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(reason);
    }

    pub fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn damaged(&self, reason: String) {
        self.damage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(reason);
    }
}

/// A stored file read in place. Blocking: used on the conversion's own
/// thread, it waits for each fetch on the runtime it was made on.
pub struct GridFsReader {
    runtime: tokio::runtime::Handle,
    chunks: mongodb::Collection<Document>,
    files_id: Bson,
    length: u64,
    chunk_size: u64,
    position: u64,
    /// The chunks fetched last, oldest first, by number.
    cache: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// The number of the last chunk fetched: a read of the next one goes
    /// straight on and fetches ahead.
    last_fetched: Option<u64>,
    /// How many chunks the last fetch asked for.
    ahead: u64,
    /// A chunk found missing or damaged: asked again, it fails at once
    /// (FFmpeg retries a bad read many times).
    broken: Option<u64>,
    stats: Arc<FetchStats>,
}

impl GridFsReader {
    pub fn new(
        runtime: tokio::runtime::Handle,
        db: &mongodb::Database,
        file: &FilesCollectionDocument,
        stats: Arc<FetchStats>,
    ) -> Self {
        GridFsReader {
            runtime,
            chunks: db.collection("fs.chunks"),
            files_id: file.id.clone(),
            length: file.length,
            chunk_size: u64::from(file.chunk_size_bytes.max(1)),
            position: 0,
            cache: Default::default(),
            last_fetched: None,
            ahead: 1,
            broken: None,
            stats,
        }
    }

    /// The same file from its start, with the same statistics.
    pub fn reopen(&self) -> Self {
        GridFsReader {
            runtime: self.runtime.clone(),
            chunks: self.chunks.clone(),
            files_id: self.files_id.clone(),
            length: self.length,
            chunk_size: self.chunk_size,
            position: 0,
            cache: Default::default(),
            last_fetched: None,
            ahead: 1,
            broken: None,
            stats: Arc::clone(&self.stats),
        }
    }

    fn chunk_count(&self) -> u64 {
        self.length.div_ceil(self.chunk_size)
    }

    /// Chunk `n`, fetched (with the ones after it when the reads run
    /// straight on) unless it is cached.
    fn chunk(&mut self, n: u64) -> io::Result<&[u8]> {
        let index = match self.cache.iter().position(|(cached, _)| *cached == n) {
            Some(index) => index,
            None if self.broken == Some(n) => return Err(self.damaged(n)),
            None => {
                let straight_on = self.last_fetched.is_some_and(|last| last + 1 == n);
                self.ahead = if straight_on {
                    (self.ahead * 2).min(READ_AHEAD)
                } else {
                    1
                };
                let count = self.ahead.min(self.chunk_count() - n);
                let Fetched { chunks, broken } = self.fetch(n, count)?;
                // A broken chunk further on: the ones before it are read,
                // and the damage shows where it is.
                if broken.is_some() {
                    self.broken = broken;
                }
                if chunks.is_empty() {
                    return Err(self.damaged(n));
                }
                self.last_fetched = Some(n + chunks.len() as u64 - 1);
                for (offset, data) in (0..).zip(chunks) {
                    if self.cache.len() == CACHED_CHUNKS {
                        self.cache.pop_front();
                    }
                    self.cache.push_back((n + offset, data));
                }
                self.cache
                    .iter()
                    .position(|(cached, _)| *cached == n)
                    .ok_or_else(|| io::Error::other("a fetched chunk is not cached"))?
            }
        };
        Ok(&self.cache[index].1)
    }

    /// The error a read of broken chunk `n` returns; the damage is noted.
    fn damaged(&mut self, n: u64) -> io::Error {
        self.broken = Some(n);
        let err = broken_chunk(n);
        self.stats.damaged(err.to_string());
        err
    }

    /// Chunks `first..first + count` in one round trip: the intact ones up
    /// to the first missing or damaged one. An error is a failed fetch
    /// (noted in the statistics): another attempt may succeed.
    fn fetch(&self, first: u64, count: u64) -> io::Result<Fetched> {
        let filter = doc! {
            "files_id": self.files_id.clone(),
            "n": { "$gte": as_i64(first), "$lt": as_i64(first + count) },
        };
        let chunks = self.chunks.clone();
        let started = std::time::Instant::now();
        // Each chunk's bytes are copied once, straight out of the reply,
        // without building a document.
        let fetched: mongodb::error::Result<Vec<Chunk>> = self.runtime.block_on(async move {
            let mut cursor = chunks
                .find(filter)
                .sort(doc! { "n": 1 })
                .projection(doc! { "_id": 0, "n": 1, "data": 1 })
                .batch_size(u32::try_from(count).unwrap_or(u32::MAX))
                .await?;
            let mut fetched = Vec::new();
            while cursor.advance().await? {
                let raw = cursor.current();
                let n = match raw.get("n") {
                    Ok(Some(RawBsonRef::Int32(n))) => u64::try_from(n).ok(),
                    Ok(Some(RawBsonRef::Int64(n))) => u64::try_from(n).ok(),
                    _ => None,
                };
                let data = raw.get_binary("data").ok().map(|data| data.bytes.to_vec());
                fetched.push(Chunk { n, data });
            }
            Ok(fetched)
        });
        self.stats.fetch_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let fetched = fetched.map_err(|err| {
            let reason = format!(
                "fetching chunks {first}..{} of the video: {err}",
                first + count
            );
            self.stats.fail(reason.clone());
            io::Error::other(reason)
        })?;
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut fetched = fetched.into_iter();
        let mut chunks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for expected in first..first + count {
            let intact = match fetched.next() {
                Some(Chunk {
                    n: Some(n),
                    data: Some(bytes),
                }) if n == expected
                    && !bytes.is_empty()
                    && (expected + 1 == self.chunk_count()
                        || bytes.len() as u64 == self.chunk_size) =>
                {
                    bytes
                }
                // The stored file itself is broken: no retry mends that.
                _ => {
                    return Ok(Fetched {
                        chunks,
                        broken: Some(expected),
                    });
                }
            };
            self.stats
                .bytes
                .fetch_add(intact.len() as u64, Ordering::Relaxed);
            self.stats.chunks.fetch_add(1, Ordering::Relaxed);
            chunks.push(intact);
        }
        Ok(Fetched {
            chunks,
            broken: None,
        })
    }
}

/// One chunk document as fetched: its number and bytes, when present.
struct Chunk {
    n: Option<u64>,
    data: Option<Vec<u8>>,
}

/// What one round trip brought: the intact chunks from the first one
/// asked for, and the missing or damaged one that ended them.
struct Fetched {
    chunks: Vec<Vec<u8>>,
    broken: Option<u64>,
}

fn broken_chunk(n: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("chunk {n} of the stored video is missing or damaged"),
    )
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Read for GridFsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.position >= self.length {
            return Ok(0);
        }
        let n = self.position / self.chunk_size;
        let offset = usize::try_from(self.position - n * self.chunk_size).unwrap_or(usize::MAX);
        let chunk = self.chunk(n)?;
        let available = chunk.get(offset..).unwrap_or_default();
        let len = available.len().min(buf.len());
        buf[..len].copy_from_slice(&available[..len]);
        self.position += len as u64;
        Ok(len)
    }
}

impl Seek for GridFsReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(by) => self.length.checked_add_signed(by),
            SeekFrom::Current(by) => self.position.checked_add_signed(by),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start")
        })?;
        self.position = target;
        Ok(target)
    }
}
