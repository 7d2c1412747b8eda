//! Turns the audio track of a media file on disk into an MP3 file on disk.
//!
//! Everything runs in-process on the FFmpeg libraries (through `ffmpeg-next`)
//! and blocks the calling thread, so async callers wrap [`convert`] in
//! `tokio::task::spawn_blocking`.
//!
//! With the default options the pipeline is the one the `ffmpeg` CLI builds
//! for `ffmpeg -i IN -vn -c:a libmp3lame -q:a 2 OUT.mp3`:
//!
//! ```text
//! demux ──(chosen audio stream only)──▶ decode ──▶ convert graph ──▶ framer graph ──▶ libmp3lame ──▶ mp3 muxer
//!                                       abuffer → [aresample] → aformat   atrim → loudnorm → frames of frame_size()
//! ```
//!
//! * The *convert* graph resamples, downmixes (with a normalised matrix, so a
//!   loud surround source never clips) and changes the sample format into
//!   what the encoder was opened with. It is built from the first decoded
//!   frame, and rebuilt if a later frame arrives with other properties (a
//!   stream that switches sample rate half way through, as broadcast captures
//!   do).
//! * The *framer* graph never changes: it trims the requested span (counted
//!   in output samples, so it is exact whatever the container's timestamps),
//!   normalises loudness if asked, and re-chunks the audio into exactly
//!   `frame_size()` samples, because LAME only accepts a short frame as the
//!   very last one. Keeping it separate from the convert graph means a rebuild
//!   never pushes a short frame into the middle of the stream nor resets the
//!   loudness measurement.
//! * The encoder and the output file are created lazily, from the first decoded
//!   frame, so a file whose audio cannot be decoded at all leaves nothing behind.
//! * When the source audio already is MP3 and the options ask for nothing a
//!   re-encode would be needed for, its packets are copied into the MP3 muxer
//!   instead (no decoding, no generation loss).
//! * Whatever the path, the written MP3 is checked before we report success:
//!   every frame header is read (no decoding) to count its samples, which
//!   must add up to the span we converted, and a few frames at the start,
//!   middle and end are decoded.
//! * A [`TimeLimit`] scaled to the input's duration stops a conversion that
//!   takes too long, wherever it is.
//!
//! The pieces: `limit` (time limit), `target` (options applied to the source
//! format), `filters` (resample, downmix, trim, loudness, framing), `encode`
//! (decoder and encoder halves), `copy` (MP3 fast path), `tags` (ID3v2.4)
//! and `verify`; the tests are in `tests`.

mod copy;
mod encode;
mod filters;
mod input;
mod limit;
mod tags;
mod target;
#[cfg(test)]
mod tests;
mod verify;

use std::io;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

pub use contract::options::{Channels, Options, OptionsError, Quality, SampleRate};
pub use limit::TimeLimit;

use ffmpeg::util::error::{EIO, EMFILE, ENFILE};
use ffmpeg::{Dictionary, Packet, Rational, codec, format, frame, media};

pub use input::{OpenStream, ReadSeek, Source};

use copy::remux;
use encode::Transcoder;
use input::{discard_all_but, open_input};
use limit::{Watchdog, seconds_text};
use tags::output_tags;
use verify::verify;

/// Units of `AVFormatContext::duration`.
const AV_TIME_BASE: f64 = 1_000_000.0;

/// How many unreadable packets in a row we skip before giving up on the file.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 1_000;

/// The shortest gap between two calls of the progress callback.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What a conversion produced, as read back from the written MP3.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Playing time of the MP3 in seconds: the samples it decodes to (LAME's
    /// encoder delay and padding excluded, as gapless players do), counted
    /// from its frame headers.
    pub duration_s: f64,
    /// Nominal bit rate for CBR, average bit rate for VBR, in kbit/s.
    pub bitrate_kbps: u32,
    /// Sample rate of the MP3 in Hz.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// Size of the MP3 file, tags included.
    pub output_bytes: u64,
    /// The source audio was already MP3 and its packets were copied as they
    /// are, without decoding and re-encoding.
    pub copied: bool,
    /// Where the conversion's time went, for the worker's per-job log.
    pub timings: Timings,
}

/// When a conversion's output started and what its verification cost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// When the first MP3 packet was written.
    pub first_packet: Option<Instant>,
    /// Reading the finished MP3 back (all of its attempts).
    pub verify: Duration,
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("the file has no audio track")]
    NoAudio,
    #[error("the file is not a video or audio file FFmpeg can read: {0}")]
    Unreadable(String),
    #[error("the audio track could not be decoded: {0}")]
    Decode(String),
    #[error("invalid conversion options: {0}")]
    InvalidOptions(String),
    #[error("the MP3 could not be encoded: {0}")]
    Encode(String),
    #[error("I/O error while converting: {0}")]
    Io(#[from] io::Error),
    /// The conversion was stopped by its [`TimeLimit`]; `limit_s` is the
    /// allowance it had when it was stopped.
    #[error("the conversion exceeded its time limit of {} s", seconds_text(*limit_s))]
    TimedOut { limit_s: f64 },
}

fn invalid(message: impl Into<String>) -> TranscodeError {
    TranscodeError::InvalidOptions(message.into())
}

impl From<OptionsError> for TranscodeError {
    fn from(err: OptionsError) -> Self {
        TranscodeError::InvalidOptions(err.message().to_owned())
    }
}

impl TranscodeError {
    /// Whether retrying the same job can never succeed.
    ///
    /// Everything about the file or the options is permanent; only I/O
    /// failures of this machine (disk full, out of memory, ...) are worth a
    /// retry.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, TranscodeError::Io(_))
    }
}

/// Initialises FFmpeg once per process and turns its own logging down to
/// errors. Safe to call any number of times, from any thread.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(error) = ffmpeg::init() {
            tracing::warn!(%error, "FFmpeg initialisation reported an error");
        }
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// Converts an audio track of `input` into an MP3 at `output`.
///
/// The MP3's title tag is the source's title tag, else `title`; artist,
/// album, date and comment tags are copied from the source (ID3v2.4). On
/// failure no file is left at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
) -> Result<Report, TranscodeError> {
    convert_with_progress(input, output, options, title, &mut |_| {})
}

/// [`convert`], calling `on_progress` with the fraction of the span converted
/// so far (0 to 1, from decoded timestamps against the source's duration).
///
/// It is called at most once per second while the conversion runs (not at
/// all for a source of unknown duration), plus once with 1.0 when the MP3 has
/// been written and verified.
pub fn convert_with_progress(
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
    on_progress: &mut dyn FnMut(f64),
) -> Result<Report, TranscodeError> {
    convert_within(input, output, options, title, None, on_progress)
}

/// [`convert_with_progress`] under a hard [`TimeLimit`] (`None`: no limit).
/// A conversion that exceeds it stops at the next packet (or FFmpeg I/O
/// call), removes its partial output and fails with
/// [`TranscodeError::TimedOut`].
pub fn convert_within(
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
    limit: Option<TimeLimit>,
    on_progress: &mut dyn FnMut(f64),
) -> Result<Report, TranscodeError> {
    convert_source_within(
        Source::File(input),
        output,
        options,
        title,
        limit,
        on_progress,
    )
}

/// [`convert_within`] from any [`Source`].
pub fn convert_source_within(
    input: Source<'_>,
    output: &Path,
    options: &Options,
    title: &str,
    limit: Option<TimeLimit>,
    on_progress: &mut dyn FnMut(f64),
) -> Result<Report, TranscodeError> {
    init();
    options.validate()?;
    let _span = tracing::debug_span!("transcode", input = %input).entered();

    let watchdog = Watchdog::new(limit);
    let mut partial = PartialOutput::new(output);
    let mut progress = Progress::new(on_progress);
    let mut copy = CopyMode::Allowed;
    let mut verifying = Duration::ZERO;
    let first = transcode(
        input,
        output,
        options,
        title,
        &mut copy,
        &mut partial,
        &mut progress,
        &watchdog,
    )
    .and_then(|written| timed_verify(output, &written, &watchdog, &mut verifying));
    let report = match first {
        // A stream that cannot be copied cleanly (broken frames, a rate
        // change mid-stream, ...) may still decode: re-encode it.
        Err(error)
            if copy == CopyMode::Attempted
                && error.is_permanent()
                && !matches!(error, TranscodeError::TimedOut { .. }) =>
        {
            tracing::warn!(%error, "copying the MP3 stream failed; re-encoding it");
            copy = CopyMode::Off;
            let written = transcode(
                input,
                output,
                options,
                title,
                &mut copy,
                &mut partial,
                &mut progress,
                &watchdog,
            )?;
            timed_verify(output, &written, &watchdog, &mut verifying)?
        }
        other => other?,
    };
    partial.keep();
    progress.finish();
    tracing::debug!(
        duration_s = report.duration_s,
        bitrate_kbps = report.bitrate_kbps,
        sample_rate = report.sample_rate,
        channels = report.channels,
        output_bytes = report.output_bytes,
        copied = report.copied,
        "MP3 written"
    );
    Ok(report)
}

/// [`verify`], adding the time it took to `spent` (every attempt's), with
/// the report's timings filled in.
fn timed_verify(
    output: &Path,
    written: &Written,
    watchdog: &Watchdog,
    spent: &mut Duration,
) -> Result<Report, TranscodeError> {
    let started = Instant::now();
    let verified = verify(output, written, watchdog);
    *spent += started.elapsed();
    verified.map(|report| Report {
        timings: Timings {
            first_packet: written.first_packet,
            verify: *spent,
        },
        ..report
    })
}

/// Whether the fast path (copying MP3 packets) may be, or was, taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyMode {
    Allowed,
    Attempted,
    Off,
}

/// Removes the output file when dropped, unless the conversion succeeded.
struct PartialOutput<'a> {
    path: &'a Path,
    /// Set once we create the file, so we never delete something we did not write.
    created: bool,
}

impl<'a> PartialOutput<'a> {
    fn new(path: &'a Path) -> Self {
        PartialOutput {
            path,
            created: false,
        }
    }

    fn mark_created(&mut self) {
        self.created = true;
    }

    fn keep(mut self) {
        self.created = false;
    }
}

impl Drop for PartialOutput<'_> {
    fn drop(&mut self) {
        if self.created {
            match std::fs::remove_file(self.path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(
                        %error,
                        path = %self.path.display(),
                        "could not remove a partial MP3"
                    );
                }
            }
        }
    }
}

/// Throttles the caller's progress callback.
struct Progress<'a> {
    callback: &'a mut dyn FnMut(f64),
    last: Option<Instant>,
    /// Source timestamp (seconds) where the converted span starts.
    start_s: f64,
    /// Length of the converted span in seconds, when the source's duration
    /// is known.
    span_s: Option<f64>,
}

impl<'a> Progress<'a> {
    fn new(callback: &'a mut dyn FnMut(f64)) -> Self {
        Progress {
            callback,
            last: None,
            start_s: 0.0,
            span_s: None,
        }
    }

    /// `start_s` and `end_s` are source timestamps in seconds.
    fn set_span(&mut self, start_s: f64, end_s: Option<f64>) {
        self.start_s = start_s;
        self.span_s = end_s
            .map(|end| end - start_s)
            .filter(|span| span.is_finite() && *span > 0.0);
    }

    /// The decoder reached source timestamp `position_s`.
    fn at(&mut self, position_s: f64) {
        let Some(span) = self.span_s else { return };
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < PROGRESS_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        (self.callback)(((position_s - self.start_s) / span).clamp(0.0, 1.0));
    }

    fn finish(&mut self) {
        (self.callback)(1.0);
    }
}

/// What was written, for verification.
struct Written {
    /// Seconds of audio the MP3 must decode to.
    expected_s: f64,
    copied: bool,
    first_packet: Option<Instant>,
}

/// The chosen audio stream, copied out of the input context.
struct Chosen {
    index: usize,
    time_base: Rational,
    parameters: codec::Parameters,
    tags: Dictionary<'static>,
    /// Timestamp of the stream's first sample in its time base.
    start: Option<i64>,
    /// Duration of the stream (or the file) in seconds, when known.
    duration_s: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
fn transcode(
    input: Source<'_>,
    output: &Path,
    options: &Options,
    title: &str,
    copy: &mut CopyMode,
    partial: &mut PartialOutput<'_>,
    progress: &mut Progress<'_>,
    watchdog: &Arc<Watchdog>,
) -> Result<Written, TranscodeError> {
    let output_str = ffmpeg_path(output)
        .ok_or_else(|| TranscodeError::Encode("the output path is not valid UTF-8".to_owned()))?;
    let mut ictx = open_input(input, watchdog)?;

    let chosen = choose_stream(&ictx, options.audio_track, title)?;
    discard_all_but(&mut ictx, chosen.index);
    watchdog.cover(chosen.duration_s.unwrap_or(0.0));
    let trim_start_s = options.trim_start_s.unwrap_or(0.0);
    let end_s = match (options.trim_end_s, chosen.duration_s) {
        (Some(end), Some(duration)) => Some(end.min(duration)),
        (end, duration) => end.or(duration),
    };
    progress.set_span(trim_start_s, end_s);

    let (source_rate, source_channels) = {
        let context = codec::context::Context::from_parameters(chosen.parameters.clone())
            .map_err(|error| decode_error("reading the stream parameters", error))?;
        match context.decoder().audio() {
            Ok(audio) => (audio.rate(), audio.channels()),
            Err(_) => (0, 0),
        }
    };
    if *copy == CopyMode::Allowed
        && chosen.parameters.id() == codec::Id::MP3
        && options.allows_copy(source_rate, source_channels)
    {
        *copy = CopyMode::Attempted;
        return remux(&mut ictx, &chosen, output_str, partial, progress, watchdog);
    }

    let mut decoder = codec::context::Context::from_parameters(chosen.parameters.clone())
        .map_err(|error| decode_error("reading the stream parameters", error))?
        .decoder();
    // FFmpeg decoders get the packet time base from here, not from the stream.
    decoder.set_packet_time_base(chosen.time_base);
    let decoder = decoder
        .audio()
        .map_err(|error| decode_error("opening the decoder", error))?;

    let mut transcoder = Transcoder {
        decoder,
        decoded: frame::Audio::empty(),
        bad_packets: 0,
        time_base: chosen.time_base,
        origin: chosen.start,
        encoding: None,
        output: output_str,
        options,
        tags: chosen.tags,
        partial,
        progress,
        watchdog,
    };

    let stream_index = chosen.index;
    let skipped = for_each_packet(&mut ictx, watchdog, |packet| {
        // Video, subtitles and other audio tracks are never decoded.
        if packet.stream() == stream_index {
            transcoder.decode_packet(packet)?;
        }
        Ok(!transcoder.past_end())
    })?;
    transcoder.bad_packets += skipped;
    drop(ictx);
    let encoded = transcoder.finish()?;
    let expected_s = encoded.span_samples as f64 / f64::from(encoded.sample_rate);
    if encoded.span_samples == 0 && trim_start_s > 0.0 {
        return Err(invalid(format!(
            "`trim_start_s` ({trim_start_s}) is past the end of the audio ({:.3} s)",
            encoded.samples as f64 / f64::from(encoded.sample_rate)
        )));
    }
    Ok(Written {
        expected_s,
        copied: false,
        first_packet: encoded.first_packet,
    })
}

/// Picks the stream to convert: the `track`-th audio stream, or FFmpeg's
/// best one.
fn choose_stream(
    ictx: &format::context::Input,
    track: Option<usize>,
    title: &str,
) -> Result<Chosen, TranscodeError> {
    let stream = match track {
        None => ictx.streams().best(media::Type::Audio),
        Some(track) => {
            let audio: Vec<_> = ictx
                .streams()
                .filter(|stream| stream.parameters().medium() == media::Type::Audio)
                .collect();
            if audio.is_empty() {
                return Err(TranscodeError::NoAudio);
            }
            let count = audio.len();
            Some(audio.into_iter().nth(track).ok_or_else(|| {
                invalid(format!(
                    "`audio_track` {track} is out of range: the file has {count} audio \
                     track{} (numbered from 0)",
                    if count == 1 { "" } else { "s" }
                ))
            })?)
        }
    }
    .ok_or(TranscodeError::NoAudio)?;

    let time_base = stream.time_base();
    let duration_s = (stream.duration() > 0)
        .then(|| ticks_to_seconds(stream.duration(), time_base))
        .filter(|seconds| *seconds > 0.0)
        .or_else(|| (ictx.duration() > 0).then(|| ictx.duration() as f64 / AV_TIME_BASE));
    let start = Some(stream.start_time()).filter(|start| *start != ffmpeg::ffi::AV_NOPTS_VALUE);
    Ok(Chosen {
        index: stream.index(),
        time_base,
        parameters: stream.parameters(),
        tags: output_tags(ictx, &stream, title),
        start,
        duration_s,
    })
}

/// Reads every packet of the file and hands it to `on_packet`, which returns
/// `false` to stop early. Corrupt data is skipped like the CLI does (the
/// demuxers resync); returns how many packets were skipped. Stops with
/// [`TranscodeError::TimedOut`] once the watchdog's limit is exceeded.
fn for_each_packet(
    ictx: &mut format::context::Input,
    watchdog: &Watchdog,
    mut on_packet: impl FnMut(&Packet) -> Result<bool, TranscodeError>,
) -> Result<u64, TranscodeError> {
    let mut consecutive_bad = 0u32;
    let mut skipped = 0u64;
    loop {
        watchdog.check()?;
        let mut packet = Packet::empty();
        match packet.read(ictx) {
            Ok(()) => consecutive_bad = 0,
            Err(ffmpeg::Error::Eof) => return Ok(skipped),
            Err(_) if watchdog.expired() => return Err(watchdog.timed_out()),
            Err(ffmpeg::Error::InvalidData) if consecutive_bad < MAX_CONSECUTIVE_BAD_PACKETS => {
                consecutive_bad += 1;
                skipped += 1;
                continue;
            }
            Err(error) => {
                return Err(match os_error(error) {
                    Some(io) => TranscodeError::Io(io),
                    None => TranscodeError::Decode(format!("reading the file: {error}")),
                });
            }
        }
        if !on_packet(&packet)? {
            return Ok(skipped);
        }
    }
}

fn ticks_to_seconds(ticks: i64, time_base: Rational) -> f64 {
    if time_base.denominator() == 0 {
        return 0.0;
    }
    ticks as f64 * f64::from(time_base.numerator()) / f64::from(time_base.denominator())
}

/// `ffmpeg-next` panics on paths that are not UTF-8 or hold a NUL; refuse them.
fn ffmpeg_path(path: &Path) -> Option<&str> {
    path.to_str().filter(|path| !path.contains('\0'))
}

/// The FFmpeg errors that are failures of this machine rather than of the
/// file: worth a retry.
fn os_error(error: ffmpeg::Error) -> Option<io::Error> {
    let ffmpeg::Error::Other { errno } = error else {
        return None;
    };
    let io = io::Error::from_raw_os_error(errno);
    use io::ErrorKind::*;
    match io.kind() {
        StorageFull | QuotaExceeded | FileTooLarge | ReadOnlyFilesystem | PermissionDenied
        | NotFound | OutOfMemory | Interrupted => Some(io),
        _ if [EIO, EMFILE, ENFILE].contains(&errno) => Some(io),
        _ => None,
    }
}

fn decode_error(what: &str, error: ffmpeg::Error) -> TranscodeError {
    match os_error(error) {
        Some(io) => TranscodeError::Io(io),
        None => TranscodeError::Decode(format!("{what}: {error}")),
    }
}

fn encode_error(what: &str, error: ffmpeg::Error) -> TranscodeError {
    match os_error(error) {
        Some(io) => TranscodeError::Io(io),
        None => TranscodeError::Encode(format!("{what}: {error}")),
    }
}
