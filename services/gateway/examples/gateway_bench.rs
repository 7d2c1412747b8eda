//! The client side of `scripts/bench-gateway`: one measurement per run,
//! printed as one line of space-separated figures for the script to read.
//!
//! * `gridfs-write` / `gridfs-read`: the same bytes straight through the
//!   mongodb driver's GridFS (the baseline the gateway is compared with);
//! * `http-upload` / `http-download`: the same bytes through the gateway
//!   (`POST /upload`, `GET /download?fid=`);
//! * `jobs-load`: `GET /api/v1/jobs` from N concurrent clients;
//! * `gridfs-delete`, `drop-db`: remove what the benchmark stored.
//!
//! The payload is generated on the fly from a seed (never held in memory
//! whole), so a 1 GiB upload costs the client no disk and no RAM.
//!
//!   cargo run --release -p gateway --example gateway_bench -- --help

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use mongodb::bson::{Bson, doc, oid::ObjectId};

/// Size of the pieces written and read: GridFS's default chunk size.
const PIECE: usize = 255 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Gateway benchmark client (one measurement per run)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes SIZE MiB into GridFS `DB` directly; prints `fid seconds MiB/s`.
    GridfsWrite {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        size_mib: u64,
        /// Stored as `metadata.owner`, so the gateway lets OWNER download it.
        #[arg(long)]
        owner: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// File name (the gateway's download names the file after it).
        #[arg(long, default_value = "bench.mp3")]
        filename: String,
    },
    /// Reads a GridFS file directly; prints `bytes seconds MiB/s`.
    GridfsRead {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        fid: String,
    },
    /// `POST /upload` of SIZE MiB; prints `job_id seconds MiB/s`.
    HttpUpload {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        size_mib: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// `GET /download?fid=`; prints `bytes seconds MiB/s`.
    HttpDownload {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        fid: String,
    },
    /// Deletes a GridFS file and its chunks.
    GridfsDelete {
        #[arg(long)]
        uri: String,
        #[arg(long)]
        db: String,
        #[arg(long)]
        fid: String,
    },
    /// Drops the databases the benchmark used.
    DropDb {
        #[arg(long)]
        uri: String,
        #[arg(long, required = true)]
        db: Vec<String>,
    },
    /// `GET /api/v1/jobs` from CLIENTS concurrent clients for SECONDS after
    /// one second of warm-up; prints `requests req/s p50_ms p99_ms errors`.
    JobsLoad {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::GridfsWrite {
            uri,
            db,
            size_mib,
            owner,
            seed,
            filename,
        } => gridfs_write(&uri, &db, size_mib, &owner, seed, &filename).await,
        Command::GridfsRead { uri, db, fid } => gridfs_read(&uri, &db, &fid).await,
        Command::HttpUpload {
            url,
            token,
            size_mib,
            seed,
        } => http_upload(&url, &token, size_mib, seed).await,
        Command::HttpDownload { url, token, fid } => http_download(&url, &token, &fid).await,
        Command::GridfsDelete { uri, db, fid } => {
            let bucket = database(&uri, &db).await?.gridfs_bucket(None);
            let fid = ObjectId::parse_str(&fid).context("fid")?;
            bucket.delete(Bson::ObjectId(fid)).await?;
            Ok(())
        }
        Command::DropDb { uri, db } => {
            for name in db {
                database(&uri, &name).await?.drop().await?;
            }
            Ok(())
        }
        Command::JobsLoad {
            url,
            token,
            clients,
            seconds,
        } => jobs_load(&url, &token, clients, seconds).await,
    }
}

/// A deterministic pseudo-random payload (xorshift64*), piece by piece.
/// It starts like an MP4 (`ftyp` box) so the gateway's media sniffing lets
/// it through, as it would a real video.
struct Payload {
    left: u64,
    state: u64,
    first: bool,
}

impl Payload {
    fn new(size: u64, seed: u64) -> Self {
        Payload {
            left: size,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            first: true,
        }
    }

    fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let len = usize::try_from(self.left).unwrap_or(PIECE).min(PIECE);
        let mut piece = Vec::with_capacity(len + 8);
        while piece.len() < len {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            piece.extend_from_slice(&self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        piece.truncate(len);
        if self.first {
            self.first = false;
            let header = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2";
            let n = header.len().min(piece.len());
            piece[..n].copy_from_slice(&header[..n]);
        }
        self.left -= len as u64;
        Some(piece)
    }
}

fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB / elapsed.as_secs_f64().max(1e-9)
}

async fn database(uri: &str, db: &str) -> anyhow::Result<mongodb::Database> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .context("connecting to MongoDB")?;
    Ok(client.database(db))
}

async fn gridfs_write(
    uri: &str,
    db: &str,
    size_mib: u64,
    owner: &str,
    seed: u64,
    filename: &str,
) -> anyhow::Result<()> {
    let bucket = database(uri, db).await?.gridfs_bucket(None);
    let fid = ObjectId::new();
    let mut payload = Payload::new(size_mib << 20, seed);
    let started = Instant::now();
    let mut sink = bucket
        .open_upload_stream(filename)
        .id(Bson::ObjectId(fid))
        .metadata(doc! { "owner": owner, "filename": filename })
        .await?;
    let mut total = 0u64;
    while let Some(piece) = payload.next_piece() {
        sink.write_all(&piece).await?;
        total += piece.len() as u64;
    }
    sink.close().await?;
    let elapsed = started.elapsed();
    println!(
        "{} {:.3} {:.1}",
        fid.to_hex(),
        elapsed.as_secs_f64(),
        rate(total, elapsed)
    );
    Ok(())
}

async fn gridfs_read(uri: &str, db: &str, fid: &str) -> anyhow::Result<()> {
    let bucket = database(uri, db).await?.gridfs_bucket(None);
    let fid = ObjectId::parse_str(fid).context("fid")?;
    let started = Instant::now();
    let mut source = bucket.open_download_stream(Bson::ObjectId(fid)).await?;
    let mut buffer = vec![0u8; PIECE];
    let mut total = 0u64;
    loop {
        let read = source.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    let elapsed = started.elapsed();
    println!(
        "{total} {:.3} {:.1}",
        elapsed.as_secs_f64(),
        rate(total, elapsed)
    );
    Ok(())
}

async fn http_upload(url: &str, token: &str, size_mib: u64, seed: u64) -> anyhow::Result<()> {
    const BOUNDARY: &str = "----gateway-bench-boundary";
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.mp4\"\r\n\
         Content-Type: video/mp4\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let size = size_mib << 20;
    let length = head.len() as u64 + size + tail.len() as u64;
    let pieces = futures::stream::unfold(Payload::new(size, seed), |mut payload| async move {
        payload
            .next_piece()
            .map(|piece| (Ok::<Bytes, std::io::Error>(Bytes::from(piece)), payload))
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(pieces)
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{url}/upload"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", length)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let status = response.status();
    let job_id = response
        .headers()
        .get("x-job-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let text = response.text().await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!("upload failed: {status} {text}");
    }
    println!(
        "{job_id} {:.3} {:.1}",
        elapsed.as_secs_f64(),
        rate(size, elapsed)
    );
    Ok(())
}

async fn http_download(url: &str, token: &str, fid: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{url}/download"))
        .query(&[("fid", fid)])
        .bearer_auth(token)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("download failed: {}", response.status());
    }
    let expected = response.content_length();
    let mut stream = response.bytes_stream();
    let mut total = 0u64;
    while let Some(piece) = stream.next().await {
        total += piece?.len() as u64;
    }
    let elapsed = started.elapsed();
    if expected.is_some_and(|expected| expected != total) {
        bail!("short download: {total} of {expected:?} bytes");
    }
    println!(
        "{total} {:.3} {:.1}",
        elapsed.as_secs_f64(),
        rate(total, elapsed)
    );
    Ok(())
}

async fn jobs_load(url: &str, token: &str, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let target = format!("{url}/api/v1/jobs");
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (http, target, token) = (http.clone(), target.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let ok = match http.get(&target).bearer_auth(&token).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if started >= warm_up {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mine, failed) = task.await?;
        latencies.extend(mine);
        errors += failed;
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies
            .get(at)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "{} {:.1} {:.2} {:.2} {errors}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        percentile(0.50),
        percentile(0.99)
    );
    Ok(())
}
