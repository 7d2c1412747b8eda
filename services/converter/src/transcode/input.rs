//! Where the demuxer reads: a file on disk, or a stream read in place (a
//! stored video, straight from GridFS), and only the chosen stream of it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use ffmpeg_next as ffmpeg;

use ffmpeg::{Dictionary, format};

use super::limit::Watchdog;
use super::{TranscodeError, ffmpeg_path, os_error};

/// A seekable byte stream the demuxer can read in place.
pub trait ReadSeek: io::Read + io::Seek + Send {}
impl<T: io::Read + io::Seek + Send> ReadSeek for T {}

/// Opens the input stream afresh (the copy fast path may need a second pass).
pub type OpenStream<'a> = &'a (dyn Fn() -> io::Result<Box<dyn ReadSeek>> + Sync);

/// Where the demuxer reads the input.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    File(&'a Path),
    /// A stream read in place (a stored video, straight from GridFS);
    /// `name` is the upload's file name, whose extension helps FFmpeg
    /// recognise formats that have no signature.
    Stream {
        open: OpenStream<'a>,
        name: &'a str,
    },
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stream { name, .. } => write!(f, "stream {name:?}"),
        }
    }
}

/// The AVIO buffer for stream inputs: FFmpeg's reads come in pieces of
/// this size (a GridFS chunk holds about four).
const STREAM_BUFFER: usize = 64 * 1024;

/// Opens the demuxer on `input`.
pub(super) fn open_input(
    input: Source<'_>,
    watchdog: &Arc<Watchdog>,
) -> Result<format::context::Input, TranscodeError> {
    let interrupt = Arc::clone(watchdog);
    let opened = match input {
        Source::File(path) => {
            // A missing input is a problem of this machine, not of the file.
            std::fs::metadata(path)?;
            let path = ffmpeg_path(path).ok_or_else(|| {
                TranscodeError::Unreadable("the input path is not valid UTF-8".to_owned())
            })?;
            // Uploads are untrusted: a playlist (HLS, ...) must not make us
            // fetch URLs. FFmpeg 5.1 already limits local inputs to
            // file,crypto,data; pin it.
            let mut open_options = Dictionary::new();
            open_options.set("protocol_whitelist", "file");
            format::input_with_interrupt_and_dictionary(
                path,
                move || interrupt.expired(),
                open_options,
            )
        }
        Source::Stream { open, name } => {
            let io =
                format::context::StreamIo::from_read_seek_with_capacity(open()?, STREAM_BUFFER)
                    .map_err(|error| TranscodeError::Io(io::Error::other(error.to_string())))?;
            // Nothing in an upload may open anything else: no URL, no file.
            let mut open_options = Dictionary::new();
            open_options.set("protocol_whitelist", "none");
            format::input_from_stream_with_interrupt(
                io,
                name_hint(name).as_deref(),
                Some(open_options),
                move || interrupt.expired(),
            )
        }
    };
    opened.map_err(|error| {
        if watchdog.expired() {
            return watchdog.timed_out();
        }
        match os_error(error) {
            Some(io) => TranscodeError::Io(io),
            None => TranscodeError::Unreadable(error.to_string()),
        }
    })
}

/// `input.<ext>` from an upload's name, when its extension is plain.
fn name_hint(name: &str) -> Option<String> {
    let (_, extension) = name.rsplit_once('.')?;
    (1..=8)
        .contains(&extension.len())
        .then_some(extension)
        .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!("input.{e}"))
}

/// Only the chosen stream is demuxed, as the CLI does with `-vn`: the
/// others' packets are never read, so an indexed container (MP4, MOV, AVI)
/// lets the demuxer skip the picture's bytes.
#[allow(unsafe_code)]
pub(super) fn discard_all_but(ictx: &mut format::context::Input, keep: usize) {
    for index in 0..ictx.nb_streams() as usize {
        if index == keep {
            continue;
        }
        if let Some(mut stream) = ictx.stream_mut(index) {
            // SAFETY: the stream belongs to `ictx`, which is alive and not
            // being read; `discard` is a plain field the demuxer consults
            // on its next read.
            unsafe {
                (*stream.as_mut_ptr()).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}
