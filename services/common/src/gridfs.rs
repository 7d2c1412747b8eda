//! GridFS helpers: every file lives in the default bucket `fs` of its
//! database (`videos` or `mp3s`), as in the original system.

use std::path::Path;

use futures::{AsyncReadExt, AsyncWriteExt};
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::error::Result;

/// Size of the pieces copied between files and GridFS: GridFS's own chunk size.
const COPY_BUFFER: usize = 255 * 1024;

/// The default bucket of `db`.
pub fn bucket(db: &mongodb::Database) -> GridFsBucket {
    db.gridfs_bucket(None)
}

/// Parses a file id from a URL or message; `None` for anything that is not a
/// 24-digit hex ObjectId (callers answer 404, never 500).
pub fn parse_fid(text: &str) -> Option<ObjectId> {
    ObjectId::parse_str(text.trim()).ok()
}

/// The files-collection document of `id`, if the file exists.
pub async fn find(bucket: &GridFsBucket, id: ObjectId) -> Result<Option<FilesCollectionDocument>> {
    Ok(bucket.find_one(doc! { "_id": id }).await?)
}

/// A stored file's files-collection document plus its legacy `md5` field
/// (written by older drivers and the original system; the current driver
/// neither writes nor models it).
pub async fn find_with_md5(
    db: &mongodb::Database,
    id: ObjectId,
) -> Result<Option<(FilesCollectionDocument, Option<String>)>> {
    let raw = db
        .collection::<Document>("fs.files")
        .find_one(doc! { "_id": id })
        .await?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let md5 = raw.get_str("md5").ok().map(str::to_owned);
    let file = mongodb::bson::from_document(raw).map_err(mongodb::error::Error::from)?;
    Ok(Some((file, md5)))
}

/// Streams bytes `start..=end` of a stored file, reading only the chunks
/// that hold them, a few at a time: a range near the end of a large file
/// costs no more than one at the start, and memory does not grow with the
/// file. A missing chunk ends the stream with an error (never short data
/// passed off as complete).
pub fn read_range(
    db: &mongodb::Database,
    file: &FilesCollectionDocument,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    let chunk_size = u64::from(file.chunk_size_bytes.max(1));
    let first = start / chunk_size;
    let last = end / chunk_size;
    let state = RangeRead {
        chunks: db.collection::<Document>("fs.chunks"),
        files_id: file.id.clone(),
        cursor: None,
        next_n: first,
        last,
        chunk_size,
        start,
        end,
    };
    futures::stream::try_unfold(state, |mut state| async move {
        if state.next_n > state.last {
            return Ok(None);
        }
        if state.cursor.is_none() {
            let filter = doc! {
                "files_id": state.files_id.clone(),
                "n": { "$gte": i64_of(state.next_n), "$lte": i64_of(state.last) },
            };
            let cursor = state
                .chunks
                .find(filter)
                .sort(doc! { "n": 1 })
                .batch_size(RANGE_BATCH)
                .await?;
            state.cursor = Some(cursor);
        }
        let next = match state.cursor.as_mut() {
            Some(cursor) => futures::TryStreamExt::try_next(cursor).await?,
            None => None,
        };
        let chunk = next.ok_or_else(|| missing_chunk(state.next_n))?;
        let n = match chunk.get("n") {
            Some(Bson::Int32(n)) => u64::try_from(*n).ok(),
            Some(Bson::Int64(n)) => u64::try_from(*n).ok(),
            _ => None,
        };
        if n != Some(state.next_n) {
            return Err(missing_chunk(state.next_n));
        }
        let data = chunk
            .get_binary_generic("data")
            .map_err(|_| missing_chunk(state.next_n))?;
        let chunk_start = state.next_n * state.chunk_size;
        let from = state.start.saturating_sub(chunk_start);
        let to = (state.end + 1 - chunk_start).min(data.len() as u64);
        let slice = usize::try_from(from)
            .ok()
            .zip(usize::try_from(to).ok())
            .and_then(|(from, to)| data.get(from..to))
            .ok_or_else(|| missing_chunk(state.next_n))?;
        let bytes = bytes::Bytes::copy_from_slice(slice);
        state.next_n += 1;
        Ok(Some((bytes, state)))
    })
}

/// Chunks fetched per round trip while streaming a range (GridFS chunks
/// are 255 KiB: about 1 MiB in memory at most).
const RANGE_BATCH: u32 = 4;

struct RangeRead {
    chunks: mongodb::Collection<Document>,
    files_id: Bson,
    cursor: Option<mongodb::Cursor<Document>>,
    /// The chunk expected next.
    next_n: u64,
    last: u64,
    chunk_size: u64,
    start: u64,
    end: u64,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn missing_chunk(n: u64) -> crate::Error {
    crate::Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("GridFS chunk {n} is missing or damaged"),
    ))
}

/// Deletes a file and its chunks; a file that is already gone is not an error.
pub async fn delete(bucket: &GridFsBucket, id: ObjectId) -> Result<()> {
    match bucket.delete(Bson::ObjectId(id)).await {
        Ok(()) => Ok(()),
        Err(err) if matches!(*err.kind, mongodb::error::ErrorKind::GridFs(_)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Copies a stored file into a local file, chunk by chunk (never whole in memory).
pub async fn download_to_file(bucket: &GridFsBucket, id: ObjectId, path: &Path) -> Result<u64> {
    let mut source = bucket.open_download_stream(Bson::ObjectId(id)).await?;
    let mut target = tokio::fs::File::create(path).await?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let read = source.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        target.write_all(&buffer[..read]).await?;
        total += read as u64;
    }
    target.flush().await?;
    Ok(total)
}

/// Stores a local file under `filename` with `metadata`, returning its new id.
/// A failed upload removes the chunks it had written.
pub async fn upload_file(
    bucket: &GridFsBucket,
    path: &Path,
    filename: &str,
    metadata: Document,
) -> Result<ObjectId> {
    upload_file_as(bucket, ObjectId::new(), path, filename, metadata).await
}

/// [`upload_file`] under an id the caller chose (and noted somewhere)
/// before the first chunk is written.
pub async fn upload_file_as(
    bucket: &GridFsBucket,
    id: ObjectId,
    path: &Path,
    filename: &str,
    metadata: Document,
) -> Result<ObjectId> {
    let mut source = tokio::fs::File::open(path).await?;
    let mut target = bucket
        .open_upload_stream(filename)
        .id(Bson::ObjectId(id))
        .metadata(metadata)
        .await?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let copied: std::io::Result<()> = async {
        loop {
            let read = source.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            target.write_all(&buffer[..read]).await?;
        }
        Ok(())
    }
    .await;
    match copied {
        Ok(()) => {
            target.close().await?;
            Ok(id)
        }
        Err(err) => {
            let _ = target.abort().await;
            Err(err.into())
        }
    }
}
