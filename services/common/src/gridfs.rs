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
    let id = ObjectId::new();
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
