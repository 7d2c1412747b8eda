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
//! * Whatever the path, the written MP3 is decoded in full before we report
//!   success: it must last as long as the span we converted.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;

pub use common::options::{Channels, Options, OptionsError, Quality, SampleRate};
use ffmpeg::format::Sample;
use ffmpeg::util::error::{EAGAIN, EIO, EMFILE, ENFILE};
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, codec, filter, format, frame, media};

/// `FF_QP2LAMBDA`: FFmpeg expresses `-q:a N` as `global_quality = N * 118`.
const FF_QP2LAMBDA: usize = 118;

/// Every sample rate MPEG audio layer III (1, 2 and 2.5) can carry.
const MP3_SAMPLE_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// The rate used when the source rate is not one MP3 can carry.
const FALLBACK_SAMPLE_RATE: u32 = 44_100;

/// Tags copied from the source, besides the title.
const COPIED_TAGS: [&str; 4] = ["artist", "album", "date", "comment"];

/// Units of `AVFormatContext::duration`.
const AV_TIME_BASE: f64 = 1_000_000.0;

/// How many unreadable packets in a row we skip before giving up on the file.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 1_000;

/// The shortest gap between two calls of the progress callback.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What a conversion produced, as read back from the written MP3.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Playing time of the MP3 in seconds, from the samples it decodes to
    /// (LAME's encoder delay and padding excluded, as gapless players do).
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

/// `12`, `0.5`: seconds for a message, without a useless `.0`.
fn seconds_text(seconds: f64) -> String {
    let rounded = (seconds * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
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

/// A hard limit on how long one conversion may take: `min` plus `factor`
/// times the length of the input. The length is the source's duration, or
/// the position the decoder has reached if that is further (a file whose
/// header lies about its length is judged by the audio it holds). Until the
/// duration is known (opening and probing the file) only `min` applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeLimit {
    /// Seconds of conversion allowed per second of input.
    pub factor: f64,
    /// Allowed whatever the input's length.
    pub min: Duration,
}

impl Default for TimeLimit {
    /// Twice realtime plus a minute: the CLI converts at 100x realtime or
    /// more, so only a wedged or pathological input ever gets near it.
    fn default() -> Self {
        TimeLimit {
            factor: 2.0,
            min: Duration::from_secs(60),
        }
    }
}

/// Enforces a [`TimeLimit`] from the blocking conversion thread: checked
/// before every packet read, and polled by FFmpeg's I/O layer through the
/// input's interrupt callback, so even a stalled open or read stops.
struct Watchdog {
    started: Instant,
    limit: Option<TimeLimit>,
    /// Seconds of input the allowance covers, as `f64` bits (non-negative
    /// floats order like their bits, so `fetch_max` keeps the largest).
    media_s: AtomicU64,
}

impl Watchdog {
    fn new(limit: Option<TimeLimit>) -> Arc<Self> {
        Arc::new(Watchdog {
            started: Instant::now(),
            limit,
            media_s: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// The input is known to last at least `seconds`.
    fn cover(&self, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            self.media_s.fetch_max(seconds.to_bits(), Ordering::Relaxed);
        }
    }

    /// Seconds the conversion may take, as far as we know the input now.
    fn allowance_s(&self) -> Option<f64> {
        let media_s = f64::from_bits(self.media_s.load(Ordering::Relaxed));
        self.limit
            .map(|limit| limit.min.as_secs_f64() + limit.factor * media_s)
    }

    fn expired(&self) -> bool {
        self.allowance_s()
            .is_some_and(|allowed| self.started.elapsed().as_secs_f64() > allowed)
    }

    fn timed_out(&self) -> TranscodeError {
        TranscodeError::TimedOut {
            limit_s: self.allowance_s().unwrap_or_default(),
        }
    }

    fn check(&self) -> Result<(), TranscodeError> {
        if self.expired() {
            Err(self.timed_out())
        } else {
            Ok(())
        }
    }
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
    init();
    options.validate()?;
    let _span = tracing::debug_span!("transcode", input = %input.display()).entered();

    let watchdog = Watchdog::new(limit);
    let mut partial = PartialOutput::new(output);
    let mut progress = Progress::new(on_progress);
    let mut copy = CopyMode::Allowed;
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
    .and_then(|written| verify(output, &written, &watchdog));
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
            verify(output, &written, &watchdog)?
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
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
    copy: &mut CopyMode,
    partial: &mut PartialOutput<'_>,
    progress: &mut Progress<'_>,
    watchdog: &Arc<Watchdog>,
) -> Result<Written, TranscodeError> {
    // A missing input is a problem of this machine, not of the file.
    std::fs::metadata(input)?;
    let input_str = ffmpeg_path(input).ok_or_else(|| {
        TranscodeError::Unreadable("the input path is not valid UTF-8".to_owned())
    })?;
    let output_str = ffmpeg_path(output)
        .ok_or_else(|| TranscodeError::Encode("the output path is not valid UTF-8".to_owned()))?;

    // Uploads are untrusted: a playlist (HLS, ...) must not make us fetch URLs.
    // FFmpeg 5.1 already limits local inputs to file,crypto,data; pin it.
    let mut open_options = Dictionary::new();
    open_options.set("protocol_whitelist", "file");
    let interrupt = Arc::clone(watchdog);
    let mut ictx = format::input_with_interrupt_and_dictionary(
        input_str,
        move || interrupt.expired(),
        open_options,
    )
    .map_err(|error| {
        if watchdog.expired() {
            return watchdog.timed_out();
        }
        match os_error(error) {
            Some(io) => TranscodeError::Io(io),
            None => TranscodeError::Unreadable(error.to_string()),
        }
    })?;

    let chosen = choose_stream(&ictx, options.audio_track, title)?;
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

/// The fast path: copies the MP3 packets of the chosen stream into the MP3
/// muxer as they are.
fn remux(
    ictx: &mut format::context::Input,
    chosen: &Chosen,
    output: &str,
    partial: &mut PartialOutput<'_>,
    progress: &mut Progress<'_>,
    watchdog: &Watchdog,
) -> Result<Written, TranscodeError> {
    partial.mark_created();
    let mut octx = format::output_as(output, "mp3")
        .map_err(|error| encode_error("creating the output file", error))?;
    {
        let mut stream = octx
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|error| encode_error("adding the MP3 stream", error))?;
        stream.set_parameters(chosen.parameters.clone());
        stream.set_time_base(chosen.time_base);
    }
    octx.set_metadata(chosen.tags.clone());
    octx.write_header_with(muxer_options())
        .map_err(|error| encode_error("writing the MP3 header", error))?;
    let stream_time_base = octx
        .stream(0)
        .map(|stream| stream.time_base())
        .unwrap_or(chosen.time_base);

    let mut copied_ticks = 0i64;
    let mut packets = 0u64;
    let skipped = for_each_packet(ictx, watchdog, |packet| {
        if packet.stream() != chosen.index || packet.size() == 0 {
            return Ok(true);
        }
        if let Some(pts) = packet.pts() {
            let position_s = ticks_to_seconds(pts - chosen.start.unwrap_or(0), chosen.time_base);
            progress.at(position_s);
            watchdog.cover(position_s);
        }
        copied_ticks += packet.duration();
        packets += 1;
        let mut packet = packet.clone();
        packet.set_stream(0);
        packet.set_position(-1);
        packet.rescale_ts(chosen.time_base, stream_time_base);
        packet
            .write_interleaved(&mut octx)
            .map_err(|error| encode_error("writing the MP3", error))?;
        Ok(true)
    })?;
    if skipped > 0 {
        tracing::warn!(
            bad_packets = skipped,
            "skipped packets that could not be read"
        );
    }
    if packets == 0 {
        return Err(TranscodeError::Decode(
            "the MP3 stream has no packets".to_owned(),
        ));
    }
    octx.write_trailer()
        .map_err(|error| encode_error("finishing the MP3", error))?;
    let copied_s = ticks_to_seconds(copied_ticks, chosen.time_base);
    let expected_s = if copied_s > 0.0 {
        copied_s
    } else {
        chosen.duration_s.unwrap_or(0.0)
    };
    tracing::debug!(packets, expected_s, "MP3 stream copied");
    Ok(Written {
        expected_s,
        copied: true,
    })
}

/// MP3 muxer options: ID3v2.4 tags (what the issue asks for; also FFmpeg's
/// default, pinned here so a library upgrade cannot change it).
fn muxer_options() -> Dictionary<'static> {
    let mut options = Dictionary::new();
    options.set("id3v2_version", "4");
    options
}

fn ticks_to_seconds(ticks: i64, time_base: Rational) -> f64 {
    if time_base.denominator() == 0 {
        return 0.0;
    }
    ticks as f64 * f64::from(time_base.numerator()) / f64::from(time_base.denominator())
}

/// The decoding half; creates the encoding half from the first decoded frame.
struct Transcoder<'a, 'p, 'c> {
    decoder: codec::decoder::Audio,
    /// Reused for every decoded frame.
    decoded: frame::Audio,
    /// Packets the demuxer or decoder rejected and we skipped.
    bad_packets: u64,
    /// Time base of the audio stream, in which decoded timestamps are expressed.
    time_base: Rational,
    /// Timestamp of the stream's first sample, for progress.
    origin: Option<i64>,
    encoding: Option<Encoding>,
    output: &'a str,
    options: &'a Options,
    tags: Dictionary<'static>,
    partial: &'a mut PartialOutput<'p>,
    progress: &'a mut Progress<'c>,
    /// Learns how far into the input we are.
    watchdog: &'a Watchdog,
}

impl Transcoder<'_, '_, '_> {
    fn decode_packet(&mut self, packet: &Packet) -> Result<(), TranscodeError> {
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => self.bad_packets += 1,
            Err(error) => return Err(decode_error("decoding", error)),
        }
        self.drain_decoder()
    }

    /// Whether everything up to the end of the trimmed span has been
    /// converted, so the rest of the file need not be read.
    fn past_end(&self) -> bool {
        self.encoding.as_ref().is_some_and(Encoding::past_end)
    }

    fn drain_decoder(&mut self) -> Result<(), TranscodeError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => self.encode_decoded()?,
                Err(ffmpeg::Error::Other { errno: EAGAIN }) | Err(ffmpeg::Error::Eof) => {
                    return Ok(());
                }
                // One broken packet; the decoder carries on with the next one.
                Err(ffmpeg::Error::InvalidData) => self.bad_packets += 1,
                Err(error) => return Err(decode_error("decoding", error)),
            }
        }
    }

    fn encode_decoded(&mut self) -> Result<(), TranscodeError> {
        if self.decoded.samples() == 0 {
            return Ok(());
        }
        let source = SourceFormat::of(&self.decoded);
        if source.format == Sample::None || source.rate == 0 || source.channels == 0 {
            return Err(TranscodeError::Decode(format!(
                "the decoder produced audio without a sample format, rate or channels \
                 ({source:?})"
            )));
        }
        let timestamp = self.decoded.timestamp();
        self.decoded.set_pts(timestamp);
        if let Some(timestamp) = timestamp {
            let position_s = ticks_to_seconds(timestamp - self.origin.unwrap_or(0), self.time_base);
            self.progress.at(position_s);
            self.watchdog.cover(position_s);
        }

        let encoding = match &mut self.encoding {
            Some(encoding) => encoding,
            None => {
                let target = Target::for_source(&source, self.options)?;
                self.partial.mark_created();
                let encoding = Encoding::create(self.output, self.options, &self.tags, target)?;
                self.encoding.insert(encoding)
            }
        };
        encoding.push(&self.decoded, source, self.time_base)
    }

    fn finish(mut self) -> Result<Encoded, TranscodeError> {
        match self.decoder.send_eof() {
            Ok(()) | Err(ffmpeg::Error::Eof) => {}
            Err(error) => return Err(decode_error("flushing the decoder", error)),
        }
        self.drain_decoder()?;
        if self.bad_packets > 0 {
            tracing::warn!(
                bad_packets = self.bad_packets,
                "skipped audio packets that could not be read or decoded"
            );
        }
        match self.encoding.take() {
            Some(encoding) => encoding.finish(),
            None => Err(TranscodeError::Decode(
                "no audio frames could be decoded".to_owned(),
            )),
        }
    }
}

/// The properties of decoded audio a convert graph is built for.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SourceFormat {
    format: Sample,
    rate: u32,
    channels: u16,
    /// An unknown layout is replaced by the default for the count (which is
    /// empty only for counts FFmpeg has no default for).
    layout: ChannelLayout,
}

impl SourceFormat {
    fn of(frame: &frame::Audio) -> Self {
        let channels = frame.channels();
        let layout = frame.channel_layout();
        let layout = if layout.is_empty() || layout.channels() != i32::from(channels) {
            ChannelLayout::default(i32::from(channels))
        } else {
            layout
        };
        SourceFormat {
            format: frame.format(),
            rate: frame.rate(),
            channels,
            layout,
        }
    }
}

/// What the encoder is opened with, and what the framer graph does.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Target {
    format: Sample,
    rate: u32,
    layout: ChannelLayout,
    /// First output sample kept (0 when not trimming the start).
    start_sample: i64,
    /// First output sample dropped, when trimming the end.
    end_sample: Option<i64>,
    normalize: bool,
}

impl Target {
    fn for_source(source: &SourceFormat, options: &Options) -> Result<Self, TranscodeError> {
        let codec = lame()?;
        let supported: Vec<Sample> = codec
            .audio()
            .ok()
            .and_then(|audio| audio.formats())
            .map(|formats| formats.collect())
            .unwrap_or_default();
        let format = pick_sample_format(source.format, &supported).ok_or_else(|| {
            TranscodeError::Encode("libmp3lame reports no sample formats".to_owned())
        })?;
        let rate = match options.sample_rate {
            SampleRate::Hz(rate) => rate,
            SampleRate::Keep if MP3_SAMPLE_RATES.contains(&source.rate) => source.rate,
            SampleRate::Keep => FALLBACK_SAMPLE_RATE,
        };
        let layout = match options.channels {
            Channels::Mono => ChannelLayout::MONO,
            Channels::Stereo => ChannelLayout::STEREO,
            Channels::Keep if source.channels == 1 => ChannelLayout::MONO,
            Channels::Keep => ChannelLayout::STEREO,
        };
        let to_samples = |seconds: f64| (seconds * f64::from(rate)).round() as i64;
        Ok(Target {
            format,
            rate,
            layout,
            start_sample: options.trim_start_s.map(to_samples).unwrap_or(0),
            end_sample: options.trim_end_s.map(to_samples),
            normalize: options.normalize,
        })
    }

    fn channels(&self) -> u16 {
        u16::try_from(self.layout.channels()).unwrap_or(2)
    }
}

fn lame() -> Result<ffmpeg::Codec, TranscodeError> {
    ffmpeg::encoder::find_by_name("libmp3lame").ok_or_else(|| {
        TranscodeError::Encode("this FFmpeg build has no libmp3lame encoder".to_owned())
    })
}

/// Picks the encoder sample format libavfilter's negotiation would pick for
/// `source` (`swap_sample_fmts` in `avfiltergraph.c`), so that our output is
/// the CLI's: the same type if available, else the closest size not smaller.
fn pick_sample_format(source: Sample, supported: &[Sample]) -> Option<Sample> {
    let bytes = source.bytes() as i64;
    let mut best = None;
    let mut best_score = i64::MIN;
    for &candidate in supported {
        if candidate.packed() == source.packed() {
            return Some(candidate);
        }
        let candidate_bytes = candidate.bytes() as i64;
        // For 32-bit sources libavfilter prefers 64-bit to keep precision.
        if bytes == 4 && candidate_bytes == 8 {
            return Some(candidate);
        }
        let mut score = -(candidate_bytes - bytes).abs();
        if candidate_bytes >= bytes {
            score += i64::from(i32::MAX / 2);
        }
        if score > best_score {
            best_score = score;
            best = Some(candidate);
        }
    }
    best
}

/// The encoding half: convert graph, framer graph, encoder and muxer.
struct Encoding {
    /// Rebuilt whenever the decoded audio changes properties.
    convert: Option<(filter::Graph, SourceFormat)>,
    framer: filter::Graph,
    encoder: codec::encoder::Audio,
    octx: format::context::Output,
    target: Target,
    /// Encoder time base, `1/sample_rate`.
    encoder_time_base: Rational,
    /// The muxer's time base, only known after `write_header`.
    stream_time_base: Rational,
    /// Timestamp of the next frame entering the framer, counted in samples so
    /// that the encoder sees a gapless, monotonic stream. Also how many
    /// converted samples there are before trimming.
    next_pts: i64,
    converted: frame::Audio,
    framed: frame::Audio,
}

impl Encoding {
    fn create(
        path: &str,
        options: &Options,
        tags: &Dictionary<'static>,
        target: Target,
    ) -> Result<Self, TranscodeError> {
        let rate = i32::try_from(target.rate)
            .map_err(|_| TranscodeError::Encode(format!("bad sample rate {}", target.rate)))?;
        let encoder_time_base = Rational::new(1, rate);

        let mut octx = format::output_as(path, "mp3")
            .map_err(|error| encode_error("creating the output file", error))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);

        let codec = lame()?;
        let mut encoder = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|error| encode_error("setting up the encoder", error))?;
        encoder.set_rate(rate);
        encoder.set_format(target.format);
        // FFmpeg 5.1 derives `channels` (and the new `ch_layout`) from this.
        encoder.set_channel_layout(target.layout);
        encoder.set_time_base(encoder_time_base);
        let mut flags = codec::Flags::empty();
        if global_header {
            flags |= codec::Flags::GLOBAL_HEADER;
        }
        match options.quality {
            Quality::Vbr(level) => {
                flags |= codec::Flags::QSCALE;
                encoder.set_quality(usize::from(level) * FF_QP2LAMBDA);
            }
            Quality::Cbr(kbps) => encoder.set_bit_rate(kbps as usize * 1000),
        }
        encoder.set_flags(flags);
        let encoder = encoder
            .open_as(codec)
            .map_err(|error| encode_error("opening libmp3lame", error))?;

        {
            let mut stream = octx
                .add_stream(codec)
                .map_err(|error| encode_error("adding the MP3 stream", error))?;
            stream.set_time_base(encoder_time_base);
            stream.set_parameters(&encoder);
        }
        octx.set_metadata(tags.clone());
        octx.write_header_with(muxer_options())
            .map_err(|error| encode_error("writing the MP3 header", error))?;
        // The muxer may pick its own time base in write_header.
        let stream_time_base = octx
            .stream(0)
            .map(|stream| stream.time_base())
            .unwrap_or(encoder_time_base);

        let framer = framer_graph(&target, encoder.frame_size())
            .map_err(|error| encode_error("building the framing filter", error))?;
        tracing::debug!(
            format = target.format.name(),
            rate = target.rate,
            channels = target.channels(),
            frame_size = encoder.frame_size(),
            start_sample = target.start_sample,
            end_sample = target.end_sample,
            normalize = target.normalize,
            "libmp3lame opened"
        );

        Ok(Encoding {
            convert: None,
            framer,
            encoder,
            octx,
            target,
            encoder_time_base,
            stream_time_base,
            next_pts: 0,
            converted: frame::Audio::empty(),
            framed: frame::Audio::empty(),
        })
    }

    /// Whether the end of the trimmed span has gone into the framer.
    fn past_end(&self) -> bool {
        self.target
            .end_sample
            .is_some_and(|end| self.next_pts >= end)
    }

    /// Feeds one decoded frame through the graphs into the encoder.
    fn push(
        &mut self,
        frame: &frame::Audio,
        source: SourceFormat,
        time_base: Rational,
    ) -> Result<(), TranscodeError> {
        let current = self.convert.as_ref().map(|(_, format)| *format);
        if current != Some(source) {
            if let Some(previous) = current {
                tracing::debug!(?previous, ?source, "audio properties changed mid-stream");
                self.flush_convert()?;
            }
            let graph = convert_graph(&source, time_base, &self.target)
                .map_err(|error| encode_error("building the conversion filter", error))?;
            self.convert = Some((graph, source));
        }
        if let Some((graph, _)) = &mut self.convert {
            source_add(graph, frame)
                .map_err(|error| encode_error("feeding the conversion filter", error))?;
        }
        self.drain_convert()
    }

    /// Sends end-of-stream through the convert graph and moves what is left
    /// into the framer.
    fn flush_convert(&mut self) -> Result<(), TranscodeError> {
        if let Some((graph, _)) = &mut self.convert {
            source_flush(graph)
                .map_err(|error| encode_error("flushing the conversion filter", error))?;
        }
        self.drain_convert()?;
        self.convert = None;
        Ok(())
    }

    fn drain_convert(&mut self) -> Result<(), TranscodeError> {
        loop {
            let Some((graph, _)) = &mut self.convert else {
                return Ok(());
            };
            let got = sink_frame(graph, &mut self.converted)
                .map_err(|error| encode_error("running the conversion filter", error))?;
            if !got {
                return Ok(());
            }
            let samples = self.converted.samples() as i64;
            self.converted.set_pts(Some(self.next_pts));
            self.next_pts += samples;
            source_add(&mut self.framer, &self.converted)
                .map_err(|error| encode_error("feeding the framing filter", error))?;
            self.drain_framer()?;
        }
    }

    fn drain_framer(&mut self) -> Result<(), TranscodeError> {
        while sink_frame(&mut self.framer, &mut self.framed)
            .map_err(|error| encode_error("running the framing filter", error))?
        {
            self.encoder
                .send_frame(&self.framed)
                .map_err(|error| encode_error("encoding", error))?;
            self.drain_encoder()?;
        }
        Ok(())
    }

    fn drain_encoder(&mut self) -> Result<(), TranscodeError> {
        loop {
            let mut packet = Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|error| encode_error("writing the MP3", error))?;
                }
                Err(ffmpeg::Error::Other { errno: EAGAIN }) | Err(ffmpeg::Error::Eof) => {
                    return Ok(());
                }
                Err(error) => return Err(encode_error("encoding", error)),
            }
        }
    }

    /// Flushes every stage and writes the trailer (the Xing/LAME header).
    fn finish(mut self) -> Result<Encoded, TranscodeError> {
        self.flush_convert()?;
        source_flush(&mut self.framer)
            .map_err(|error| encode_error("flushing the framing filter", error))?;
        self.drain_framer()?;
        self.encoder
            .send_eof()
            .map_err(|error| encode_error("flushing the encoder", error))?;
        self.drain_encoder()?;
        self.octx
            .write_trailer()
            .map_err(|error| encode_error("finishing the MP3", error))?;
        let end = self
            .target
            .end_sample
            .map_or(self.next_pts, |end| end.min(self.next_pts));
        Ok(Encoded {
            sample_rate: self.target.rate,
            samples: u64::try_from(self.next_pts).unwrap_or(0),
            span_samples: u64::try_from(end - self.target.start_sample).unwrap_or(0),
        })
    }
}

/// What the encoder was set up with, known once the output is finished.
struct Encoded {
    sample_rate: u32,
    /// Converted samples before trimming (the source length at the output rate).
    samples: u64,
    /// Samples of the trimmed span: what the MP3 must decode to.
    span_samples: u64,
}

/// `abuffer -> [aresample] -> aformat(target) -> abuffersink`: resampling,
/// downmixing and sample format conversion.
///
/// Without a downmix libavfilter inserts the resampler only where needed, as
/// the CLI does. With one we insert it ourselves, asking swresample to
/// normalise its matrix (`rematrix_maxval=1`): by default it only does so for
/// integer output, and a loud 5.1 source downmixed to float would clip (the
/// CLI's does).
fn convert_graph(
    source: &SourceFormat,
    time_base: Rational,
    target: &Target,
) -> Result<filter::Graph, ffmpeg::Error> {
    let time_base = if time_base.numerator() > 0 && time_base.denominator() > 0 {
        time_base
    } else {
        Rational::new(1, i32::try_from(source.rate).unwrap_or(1))
    };
    // FFmpeg has no default layout for some channel counts (9 and up).
    let channels = if source.layout.is_empty() {
        format!("channels={}", source.channels)
    } else {
        format!("channel_layout=0x{:x}", source.layout.bits())
    };
    let args = format!(
        "time_base={time_base}:sample_rate={}:sample_fmt={}:{channels}",
        source.rate,
        source.format.name(),
    );
    let downmix = if source.channels > target.channels() {
        "aresample=rematrix_maxval=1,"
    } else {
        ""
    };
    let spec = format!(
        "{downmix}aformat=sample_fmts={}:sample_rates={}:channel_layouts=0x{:x}",
        target.format.name(),
        target.rate,
        target.layout.bits(),
    );
    graph(&args, &spec)
}

/// `abuffer -> [atrim] -> [loudnorm] -> abuffersink` in the encoder's format,
/// handing out exactly `frame_size` samples per frame (fewer only for the
/// last one).
fn framer_graph(target: &Target, frame_size: u32) -> Result<filter::Graph, ffmpeg::Error> {
    let args = format!(
        "time_base=1/{rate}:sample_rate={rate}:sample_fmt={}:channel_layout=0x{:x}",
        target.format.name(),
        target.layout.bits(),
        rate = target.rate,
    );
    let mut graph = graph(&args, &framer_spec(target))?;
    if frame_size > 0 {
        graph
            .get("out")
            .ok_or(ffmpeg::Error::FilterNotFound)?
            .sink()
            .set_frame_size(frame_size);
    }
    Ok(graph)
}

/// The framer's filters. The input's timestamps count converted samples from
/// 0, so `atrim` by sample numbers is exact.
fn framer_spec(target: &Target) -> String {
    let mut filters = Vec::new();
    if target.start_sample > 0 || target.end_sample.is_some() {
        let mut trim = format!("atrim=start_sample={}", target.start_sample.max(0));
        if let Some(end) = target.end_sample {
            trim.push_str(&format!(":end_sample={end}"));
        }
        filters.push(trim);
        filters.push("asetpts=PTS-STARTPTS".to_owned());
    }
    if target.normalize {
        // EBU R128 measurement with the usual targets for listening on
        // phones and podcasts (-16 LUFS integrated, -1.5 dBTP true peak)
        // rather than broadcast's -23 LUFS, which sounds quiet there.
        filters.push("loudnorm=I=-16:TP=-1.5:LRA=11".to_owned());
        // loudnorm works at 192 kHz; come back to the encoder's format.
        filters.push(format!(
            "aresample={rate},aformat=sample_fmts={}:sample_rates={rate}:channel_layouts=0x{:x}",
            target.format.name(),
            target.layout.bits(),
            rate = target.rate,
        ));
    }
    if filters.is_empty() {
        "anull".to_owned()
    } else {
        filters.join(",")
    }
}

fn graph(source_args: &str, spec: &str) -> Result<filter::Graph, ffmpeg::Error> {
    let abuffer = filter::find("abuffer").ok_or(ffmpeg::Error::FilterNotFound)?;
    let abuffersink = filter::find("abuffersink").ok_or(ffmpeg::Error::FilterNotFound)?;
    let mut graph = filter::Graph::new();
    graph.add(&abuffer, "in", source_args)?;
    graph.add(&abuffersink, "out", "")?;
    graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    Ok(graph)
}

fn source_add(graph: &mut filter::Graph, frame: &frame::Audio) -> Result<(), ffmpeg::Error> {
    graph
        .get("in")
        .ok_or(ffmpeg::Error::FilterNotFound)?
        .source()
        .add(frame)
}

fn source_flush(graph: &mut filter::Graph) -> Result<(), ffmpeg::Error> {
    graph
        .get("in")
        .ok_or(ffmpeg::Error::FilterNotFound)?
        .source()
        .flush()
}

/// Pulls one frame from the sink; `Ok(false)` when it needs more input or is done.
fn sink_frame(graph: &mut filter::Graph, frame: &mut frame::Audio) -> Result<bool, ffmpeg::Error> {
    match graph
        .get("out")
        .ok_or(ffmpeg::Error::FilterNotFound)?
        .sink()
        .frame(frame)
    {
        Ok(()) => Ok(true),
        Err(ffmpeg::Error::Other { errno: EAGAIN }) | Err(ffmpeg::Error::Eof) => Ok(false),
        Err(error) => Err(error),
    }
}

/// The MP3's tags: the source's title, else `title`; plus
/// artist/album/date/comment from the container or, failing that, the audio
/// stream (Ogg and Matroska often tag the stream).
fn output_tags(
    ictx: &format::context::Input,
    stream: &ffmpeg::Stream<'_>,
    title: &str,
) -> Dictionary<'static> {
    let container = ictx.metadata();
    let stream_tags = stream.metadata();
    let source = |key: &str| {
        container
            .get(key)
            .or_else(|| stream_tags.get(key))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };

    let mut tags = Dictionary::new();
    let title = title.trim();
    if let Some(title) = source("title") {
        tags.set("title", &title);
    } else if !title.is_empty() {
        tags.set("title", title);
    }
    for key in COPIED_TAGS {
        if let Some(value) = source(key) {
            tags.set(key, &value);
        }
    }
    // What the CLI writes too (the TSSE frame).
    let version = format::version();
    tags.set(
        "encoder",
        &format!(
            "Lavf{}.{}.{}",
            version >> 16,
            (version >> 8) & 0xff,
            version & 0xff
        ),
    );
    tags
}

/// Packets decoded at each of the start, middle and end of the MP3.
const VERIFY_WINDOW: usize = 4;

/// Opens the finished MP3 the way a player would, checks it lasts as long
/// as the span we converted, and fills the report; without decoding all of
/// it, which would cost an eighth of the conversion again.
///
/// * Every packet is demuxed and its MPEG audio frame header read: the
///   header says how many samples the frame holds (and its rate and
///   channels, which must not change). The decoder's gapless trimming
///   (LAME's delay and padding, which the demuxer hands out as skip-samples
///   side data) is subtracted: the same count a full decode gives.
/// * A few frames at the start, the middle and the end are decoded: the
///   stream must decode, to the rate and channels its headers announce.
fn verify(output: &Path, written: &Written, watchdog: &Watchdog) -> Result<Report, TranscodeError> {
    let output_bytes = std::fs::metadata(output)?.len();
    if output_bytes == 0 {
        return Err(unverified("the file is empty"));
    }
    let path = ffmpeg_path(output)
        .ok_or_else(|| TranscodeError::Encode("the output path is not valid UTF-8".to_owned()))?;
    let mut ictx =
        format::input(path).map_err(|error| unverified(format!("it does not open: {error}")))?;
    let (index, parameters, stream_bit_rate) = {
        let stream = ictx
            .streams()
            .best(media::Type::Audio)
            .ok_or_else(|| unverified("it has no audio stream"))?;
        let parameters = stream.parameters();
        let bit_rate = parameters.bit_rate();
        (stream.index(), parameters, bit_rate)
    };
    let decoder = codec::context::Context::from_parameters(parameters)
        .and_then(|context| context.decoder().audio())
        .map_err(|error| unverified(format!("it has no MP3 decoder: {error}")))?;
    let mut sampler = Sampler::new(decoder);

    let mut first: Option<FrameHeader> = None;
    let mut frame_samples = 0u64;
    let mut skipped = 0u64;
    let mut packets = 0usize;
    // Where the middle window starts, in samples.
    let middle = (written.expected_s.max(0.0) / 2.0 * 1000.0) as u64;
    let mut middle_at: Option<usize> = None;
    let mut last = std::collections::VecDeque::with_capacity(VERIFY_WINDOW);
    loop {
        watchdog.check()?;
        let mut packet = Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(error) => return Err(unverified(format!("it cannot be read: {error}"))),
        }
        if packet.stream() != index {
            continue;
        }
        let header = packet
            .data()
            .and_then(FrameHeader::parse)
            .ok_or_else(|| unverified(format!("packet {packets} is not an MPEG audio frame")))?;
        match first {
            None => first = Some(header),
            Some(first) if !first.same_format(&header) => {
                return Err(unverified(format!(
                    "its format changes mid-stream ({} Hz, {} channels, then {} Hz, {} \
                     channels)",
                    first.sample_rate, first.channels, header.sample_rate, header.channels
                )));
            }
            Some(_) => {}
        }
        frame_samples += u64::from(header.samples);
        skipped += skip_samples(&packet);

        // Start: the first packets; middle: from the packet that crosses
        // half the expected length (in ms, to stay in integers).
        if packets < VERIFY_WINDOW {
            sampler.decode(&packet, "start")?;
        } else if middle_at.is_none()
            && frame_samples * 1000 / u64::from(header.sample_rate) >= middle
        {
            middle_at = Some(packets);
            sampler.restart()?;
        }
        if let Some(at) = middle_at
            && packets >= VERIFY_WINDOW
            && packets < at + VERIFY_WINDOW
        {
            sampler.decode(&packet, "middle")?;
        }
        if last.len() == VERIFY_WINDOW {
            last.pop_front();
        }
        last.push_back(packet);
        packets += 1;
    }
    let Some(header) = first else {
        return Err(unverified("it decodes to no audio"));
    };
    sampler.restart()?;
    for packet in &last {
        sampler.decode(packet, "end")?;
    }
    sampler.finish()?;
    if let Some((rate, channels)) = sampler.format
        && (rate != header.sample_rate || channels != header.channels)
    {
        return Err(unverified(format!(
            "it decodes to {rate} Hz, {channels} channels where its headers say {} Hz, {} \
             channels",
            header.sample_rate, header.channels
        )));
    }

    let samples = frame_samples.saturating_sub(skipped);
    if samples == 0 {
        return Err(unverified("it decodes to no audio"));
    }
    let duration_s = samples as f64 / f64::from(header.sample_rate);
    check_duration(duration_s, written.expected_s).map_err(unverified)?;

    // From the first frame header for CBR, from the Xing header for VBR.
    let bitrate_kbps = if stream_bit_rate > 0 {
        (stream_bit_rate as f64 / 1000.0).round() as u32
    } else {
        (output_bytes as f64 * 8.0 / duration_s / 1000.0).round() as u32
    };
    Ok(Report {
        duration_s,
        bitrate_kbps,
        sample_rate: header.sample_rate,
        channels: header.channels,
        output_bytes,
        copied: written.copied,
    })
}

/// The parts of an MPEG audio frame header verification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    sample_rate: u32,
    channels: u16,
    /// Samples per channel the frame decodes to.
    samples: u32,
}

impl FrameHeader {
    /// Reads the 4-byte header at the start of `frame` (ISO 11172-3 and
    /// 13818-3, plus the MPEG 2.5 extension); `None` if it is not one.
    fn parse(frame: &[u8]) -> Option<Self> {
        let [b0, b1, b2, b3, ..] = *frame else {
            return None;
        };
        if b0 != 0xff || b1 & 0xe0 != 0xe0 {
            return None;
        }
        let version = (b1 >> 3) & 0b11; // 0: MPEG 2.5, 1: reserved, 2: MPEG 2, 3: MPEG 1
        let layer = (b1 >> 1) & 0b11; // 1: III, 2: II, 3: I, 0: reserved
        let bitrate_index = b2 >> 4;
        let rate_index = (b2 >> 2) & 0b11;
        if version == 1 || layer == 0 || bitrate_index == 0b1111 || rate_index == 0b11 {
            return None;
        }
        let base_rate = [44_100, 48_000, 32_000][usize::from(rate_index)];
        let sample_rate = match version {
            3 => base_rate,
            2 => base_rate / 2,
            _ => base_rate / 4,
        };
        let samples = match (layer, version) {
            (3, _) => 384,
            (2, _) | (1, 3) => 1152,
            _ => 576,
        };
        Some(FrameHeader {
            sample_rate,
            channels: if b3 >> 6 == 0b11 { 1 } else { 2 },
            samples,
        })
    }

    fn same_format(&self, other: &FrameHeader) -> bool {
        self.sample_rate == other.sample_rate && self.channels == other.channels
    }
}

/// Samples the decoder drops from a packet for gapless playback (the
/// `AV_PKT_DATA_SKIP_SAMPLES` side data: 32-bit little-endian counts from
/// the start and from the end of the frame).
fn skip_samples(packet: &Packet) -> u64 {
    packet
        .side_data()
        .filter(|side| side.kind() == ffmpeg::codec::packet::side_data::Type::SkipSamples)
        .map(|side| {
            let word = |at: usize| {
                side.data()
                    .get(at..at + 4)
                    .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                    .map_or(0, |bytes| u64::from(u32::from_le_bytes(bytes)))
            };
            word(0) + word(4)
        })
        .sum()
}

/// Decodes windows of a few packets, each from a clean decoder state (as
/// after a seek), and requires each to produce audio.
struct Sampler {
    decoder: codec::decoder::Audio,
    frame: frame::Audio,
    /// Samples the current window produced so far, and its name.
    window: Option<(&'static str, u64)>,
    /// Rate and channels of the decoded frames.
    format: Option<(u32, u16)>,
}

impl Sampler {
    fn new(decoder: codec::decoder::Audio) -> Self {
        Sampler {
            decoder,
            frame: frame::Audio::empty(),
            window: None,
            format: None,
        }
    }

    fn decode(&mut self, packet: &Packet, window: &'static str) -> Result<(), TranscodeError> {
        self.window.get_or_insert((window, 0));
        self.decoder
            .send_packet(packet)
            .map_err(|error| unverified(format!("its {window} does not decode: {error}")))?;
        self.receive(window)
    }

    fn receive(&mut self, window: &'static str) -> Result<(), TranscodeError> {
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) if self.frame.samples() == 0 => {}
                Ok(()) => {
                    self.format = Some((self.frame.rate(), self.frame.channels()));
                    if let Some((_, samples)) = &mut self.window {
                        *samples += self.frame.samples() as u64;
                    }
                }
                Err(ffmpeg::Error::Other { errno: EAGAIN }) | Err(ffmpeg::Error::Eof) => {
                    return Ok(());
                }
                Err(error) => {
                    return Err(unverified(format!("its {window} does not decode: {error}")));
                }
            }
        }
    }

    /// Ends the current window (it must have produced audio) and resets
    /// the decoder for the next one.
    fn restart(&mut self) -> Result<(), TranscodeError> {
        self.close_window()?;
        self.decoder.flush();
        Ok(())
    }

    fn close_window(&mut self) -> Result<(), TranscodeError> {
        match self.window.take() {
            Some((name, 0)) => Err(unverified(format!("its {name} decodes to no audio"))),
            _ => Ok(()),
        }
    }

    /// Drains the decoder and closes the last window.
    fn finish(&mut self) -> Result<(), TranscodeError> {
        let window = self.window.map_or("end", |(name, _)| name);
        match self.decoder.send_eof() {
            Ok(()) | Err(ffmpeg::Error::Eof) => {}
            Err(error) => {
                return Err(unverified(format!("its {window} does not decode: {error}")));
            }
        }
        self.receive(window)?;
        self.close_window()
    }
}

/// The decoded MP3 must last as long as the converted span, within
/// max(0.1 s, 1%).
fn check_duration(decoded_s: f64, expected_s: f64) -> Result<(), String> {
    let tolerance = (expected_s * 0.01).max(0.1);
    if (decoded_s - expected_s).abs() <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "it lasts {decoded_s:.3} s instead of {expected_s:.3} s"
        ))
    }
}

fn unverified(reason: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Encode(format!("the MP3 failed verification: {reason}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;
    use std::process::Command;

    use serde_json::{Value, json};

    /// Runs the `ffmpeg` CLI: `args` split on whitespace, then `tail` as is.
    fn ffmpeg_cli(args: &str, tail: &[&str]) {
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(args.split_whitespace())
            .args(tail)
            .status()
            .expect("ffmpeg CLI runs");
        assert!(status.success(), "ffmpeg {args} {tail:?} failed");
    }

    fn ffprobe(path: &Path) -> Value {
        let output = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
            ])
            .arg(path)
            .output()
            .expect("ffprobe runs");
        assert!(output.status.success(), "ffprobe {} failed", path.display());
        serde_json::from_slice(&output.stdout).expect("ffprobe prints JSON")
    }

    fn audio_stream(probe: &Value) -> &Value {
        probe["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .find(|stream| stream["codec_type"] == "audio")
            .expect("an audio stream")
    }

    fn number(value: &Value) -> f64 {
        value
            .as_str()
            .expect("ffprobe prints numbers as strings")
            .parse()
            .expect("a number")
    }

    /// MD5 of the decoded samples, to compare two MP3s whatever their tags.
    fn decoded_md5(path: &Path) -> String {
        let output = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-map", "0:a", "-f", "md5", "-"])
            .output()
            .expect("ffmpeg CLI runs");
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("utf-8")
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Dir(tempfile::tempdir().expect("tempdir"))
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn str(&self, name: &str) -> String {
            self.path(name).to_str().expect("utf-8 path").to_owned()
        }
    }

    /// Converts with the defaults and checks the output is a readable MP3
    /// that the report describes truthfully.
    fn convert_ok(input: &Path, output: &Path, options: &Options, title: &str) -> (Report, Value) {
        let report = convert(input, output, options, title).expect("conversion succeeds");
        let probe = ffprobe(output);
        assert_eq!(probe["format"]["format_name"], "mp3");
        let stream = audio_stream(&probe);
        assert_eq!(stream["codec_name"], "mp3");
        assert_eq!(
            number(&stream["sample_rate"]),
            f64::from(report.sample_rate)
        );
        assert_eq!(stream["channels"], u64::from(report.channels));
        assert_eq!(
            report.output_bytes,
            std::fs::metadata(output).expect("output exists").len()
        );
        // FFmpeg's demuxer counts whole frames: LAME's delay (1105 samples)
        // and end padding (up to about two frames) on top of the audio.
        let probed = number(&probe["format"]["duration"]);
        let frame = if report.sample_rate >= 32_000 {
            1152.0
        } else {
            576.0
        };
        let padding = (1105.0 + 3.0 * frame) / f64::from(report.sample_rate);
        assert!(
            (probed - padding..=probed + 0.001).contains(&report.duration_s),
            "report says {} s, ffprobe {probed} s",
            report.duration_s
        );
        (report, probe)
    }

    /// The MP3 decodes to as many samples as the source (AAC sources carry
    /// up to about 25 ms of priming the decoder hands out too).
    fn assert_mp3_duration(report: &Report, source_s: f64) {
        assert!(
            (source_s - 0.005..=source_s + 0.03).contains(&report.duration_s),
            "{} s is not about {source_s} s",
            report.duration_s
        );
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= expected * tolerance,
            "{actual} is not within {}% of {expected}",
            tolerance * 100.0
        );
    }

    #[test]
    fn mp4_with_h264_and_aac_becomes_a_tagged_stereo_mp3() {
        let dir = Dir::new();
        let input = dir.str("clip.mp4");
        ffmpeg_cli(
            "-f lavfi -i testsrc=size=160x120:rate=15:duration=4 \
             -f lavfi -i sine=frequency=440:sample_rate=44100:duration=4 \
             -c:v libx264 -preset ultrafast -c:a aac -ac 2 -shortest",
            &[
                "-metadata",
                "title=Source title",
                "-metadata",
                "artist=The Artist",
                "-metadata",
                "album=The Album",
                "-metadata",
                "date=2024",
                "-metadata",
                "comment=Made in a test",
                &input,
            ],
        );
        let source_audio = number(&audio_stream(&ffprobe(Path::new(&input)))["duration"]);
        let output = dir.path("clip.mp3");

        let (report, probe) = convert_ok(
            Path::new(&input),
            &output,
            &Options::default(),
            "My talk: part 1",
        );

        assert_eq!(report.sample_rate, 44_100);
        assert_eq!(report.channels, 2);
        assert_close(report.duration_s, source_audio, 0.02);
        assert_mp3_duration(&report, 4.0);
        // A sine tone is easy: V2 gives far less than its 190 kbit/s target.
        assert!((32..=320).contains(&report.bitrate_kbps), "{report:?}");
        assert!(!report.copied);
        let tags = &probe["format"]["tags"];
        // The source's own title wins over the file name.
        assert_eq!(tags["title"], "Source title");
        assert_eq!(tags["artist"], "The Artist");
        assert_eq!(tags["album"], "The Album");
        assert_eq!(tags["date"], "2024");
        assert_eq!(tags["comment"], "Made in a test");
    }

    #[test]
    fn output_decodes_to_the_same_samples_as_the_ffmpeg_cli() {
        let dir = Dir::new();
        let tone = "sine=frequency=300:beep_factor=4:duration=2";
        let sources = [
            // (Surround differs on purpose: our downmix matrix is normalised.)
            ("stereo.mp4", "-c:a aac -ac 2"),
            ("phone.wav", "-ar 8000 -ac 1 -c:a pcm_s16le"),
            ("plain.wav", "-ac 2 -c:a pcm_s16le"),
            ("opus.mkv", "-ac 2 -c:a libopus"),
        ];
        for (name, codec_args) in sources {
            let input = dir.str(name);
            ffmpeg_cli(&format!("-f lavfi -i {tone} {codec_args}"), &[&input]);
            let cli = dir.str(&format!("{name}.cli.mp3"));
            ffmpeg_cli(
                "-i",
                &[&input, "-vn", "-c:a", "libmp3lame", "-q:a", "2", &cli],
            );
            let ours = dir.path(&format!("{name}.ours.mp3"));

            let (_, probe) = convert_ok(Path::new(&input), &ours, &Options::default(), "t");

            assert_eq!(decoded_md5(&ours), decoded_md5(Path::new(&cli)), "{name}");
            let theirs = ffprobe(Path::new(&cli));
            for field in [
                "sample_rate",
                "channels",
                "channel_layout",
                "sample_fmt",
                "duration",
            ] {
                assert_eq!(
                    audio_stream(&probe)[field],
                    audio_stream(&theirs)[field],
                    "{name}: {field}"
                );
            }
            assert_eq!(
                probe["format"]["tags"]["encoder"], theirs["format"]["tags"]["encoder"],
                "{name}"
            );
        }
    }

    #[test]
    fn matroska_with_opus_keeps_48_khz_stereo() {
        let dir = Dir::new();
        let input = dir.str("clip.mkv");
        ffmpeg_cli(
            "-f lavfi -i testsrc=size=160x120:rate=15:duration=3 \
             -f lavfi -i sine=frequency=440:sample_rate=48000:duration=3 \
             -c:v libx264 -preset ultrafast -c:a libopus -ac 2",
            &["-metadata", "artist=Opus Artist", &input],
        );
        let output = dir.path("clip.mp3");

        let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "Opus");

        assert_eq!(report.sample_rate, 48_000);
        assert_eq!(report.channels, 2);
        assert_mp3_duration(&report, 3.0);
        assert_eq!(probe["format"]["tags"]["title"], "Opus");
        assert_eq!(probe["format"]["tags"]["artist"], "Opus Artist");
    }

    #[test]
    fn surround_5_1_is_downmixed_to_stereo() {
        let dir = Dir::new();
        let input = dir.str("surround.m4a");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=2 -af aformat=channel_layouts=5.1 -c:a aac",
            &[&input],
        );
        assert_eq!(audio_stream(&ffprobe(Path::new(&input)))["channels"], 6);
        let output = dir.path("surround.mp3");

        let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "5.1");

        assert_eq!(report.channels, 2);
        assert_eq!(audio_stream(&probe)["channel_layout"], "stereo");
        assert_mp3_duration(&report, 2.0);
    }

    #[test]
    fn mono_8_khz_stays_mono_8_khz() {
        let dir = Dir::new();
        let input = dir.str("phone.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=8000:duration=3 -ac 1 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("phone.mp3");

        let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Phone");

        assert_eq!(report.sample_rate, 8_000);
        assert_eq!(report.channels, 1);
        assert_mp3_duration(&report, 3.0);
    }

    #[test]
    fn stereo_wav_without_a_channel_layout_converts() {
        let dir = Dir::new();
        let input = dir.str("plain.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=2 -ac 2 -c:a pcm_s16le",
            &[&input],
        );
        // A plain (non-extensible) WAV header has no channel mask.
        assert!(
            audio_stream(&ffprobe(Path::new(&input)))
                .get("channel_layout")
                .is_none()
        );
        let output = dir.path("plain.mp3");

        let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Plain");

        assert_eq!(report.channels, 2);
        assert_mp3_duration(&report, 2.0);
    }

    #[test]
    fn a_rate_mp3_cannot_carry_becomes_44_1_khz() {
        let dir = Dir::new();
        let input = dir.str("hires.flac");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=96000:duration=2 -c:a flac",
            &[&input],
        );
        let output = dir.path("hires.mp3");

        let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Hi-res");

        assert_eq!(report.sample_rate, 44_100);
        assert_eq!(report.channels, 1);
        assert_mp3_duration(&report, 2.0);
    }

    #[test]
    fn a_sample_rate_change_mid_stream_keeps_all_the_audio() {
        let dir = Dir::new();
        let first = dir.str("first.ts");
        let second = dir.str("second.ts");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 -c:a mp2 -ac 2",
            &[&first],
        );
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=660:sample_rate=48000:duration=2 \
             -c:a mp2 -ac 2 -output_ts_offset 2",
            &[&second],
        );
        let joined = dir.path("joined.ts");
        let mut bytes = std::fs::read(&first).expect("first part");
        bytes.extend(std::fs::read(&second).expect("second part"));
        std::fs::write(&joined, bytes).expect("joined file");
        let output = dir.path("joined.mp3");

        let (report, _) = convert_ok(&joined, &output, &Options::default(), "Joined");

        assert_eq!(report.sample_rate, 44_100);
        assert_mp3_duration(&report, 4.0);
    }

    #[test]
    fn cbr_128_gives_128_kbps() {
        let dir = Dir::new();
        let input = dir.str("tone.m4a");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=3 -ac 2 -c:a aac",
            &[&input],
        );
        let output = dir.path("tone.mp3");
        let options = Options::from_json(&json!({"quality": "cbr", "bitrate_kbps": 128}))
            .expect("valid options");

        let (report, probe) = convert_ok(Path::new(&input), &output, &options, "CBR");

        assert_eq!(report.bitrate_kbps, 128);
        assert_close(number(&audio_stream(&probe)["bit_rate"]), 128_000.0, 0.02);
    }

    #[test]
    fn video_without_audio_is_no_audio() {
        let dir = Dir::new();
        let input = dir.str("silent.mp4");
        ffmpeg_cli(
            "-f lavfi -i testsrc=size=160x120:rate=15:duration=1 \
             -c:v libx264 -preset ultrafast",
            &[&input],
        );
        let output = dir.path("silent.mp3");

        let error = convert(Path::new(&input), &output, &Options::default(), "x")
            .expect_err("no audio to convert");

        assert!(matches!(error, TranscodeError::NoAudio), "{error:?}");
        assert!(error.is_permanent());
        assert!(!output.exists());
    }

    #[test]
    fn random_bytes_are_unreadable() {
        let dir = Dir::new();
        let input = dir.path("noise.mp4");
        // A fixed xorshift sequence, so the test sees the same bytes every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(&input, bytes).expect("write noise");
        let output = dir.path("noise.mp3");

        let error = convert(&input, &output, &Options::default(), "x").expect_err("not media");

        assert!(matches!(error, TranscodeError::Unreadable(_)), "{error:?}");
        assert!(error.is_permanent());
        assert!(!output.exists());
    }

    #[test]
    fn a_playlist_cannot_make_ffmpeg_fetch_urls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let dir = Dir::new();
        let input = dir.path("upload.m3u8");
        std::fs::write(
            &input,
            format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n\
                 http://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n"
            ),
        )
        .expect("write playlist");
        let output = dir.path("upload.mp3");

        let error = convert(&input, &output, &Options::default(), "x").expect_err("refused");

        assert!(error.is_permanent(), "{error:?}");
        assert!(!output.exists());
        assert!(
            listener.accept().is_err(),
            "FFmpeg connected to the URL in the playlist"
        );
    }

    #[test]
    fn an_empty_file_is_unreadable() {
        let dir = Dir::new();
        let input = dir.path("empty.mp4");
        std::fs::write(&input, b"").expect("write empty file");
        let output = dir.path("empty.mp3");

        let error = convert(&input, &output, &Options::default(), "x").expect_err("empty");

        assert!(matches!(error, TranscodeError::Unreadable(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("the file is not a video or audio file FFmpeg can read: "),
            "{error}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn a_missing_input_is_a_retryable_io_error() {
        let dir = Dir::new();
        let output = dir.path("out.mp3");

        let error = convert(&dir.path("nope.mp4"), &output, &Options::default(), "x")
            .expect_err("missing input");

        assert!(matches!(error, TranscodeError::Io(_)), "{error:?}");
        assert!(!error.is_permanent());
        assert!(!output.exists());
    }

    #[test]
    fn out_of_range_options_are_rejected_before_any_work() {
        let dir = Dir::new();
        let output = dir.path("out.mp3");
        let options = Options {
            quality: Quality::Vbr(12),
            ..Options::default()
        };

        let error = convert(&dir.path("nope.mp4"), &output, &options, "x").expect_err("bad");

        assert!(
            matches!(error, TranscodeError::InvalidOptions(_)),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn a_partial_output_is_removed_unless_kept() {
        let dir = Dir::new();
        let failed = dir.path("failed.mp3");
        let finished = dir.path("finished.mp3");
        let untouched = dir.path("untouched.mp3");
        for path in [&failed, &finished, &untouched] {
            std::fs::write(path, b"ID3").expect("write file");
        }

        {
            let mut partial = PartialOutput::new(&failed);
            partial.mark_created();
        }
        {
            let mut partial = PartialOutput::new(&finished);
            partial.mark_created();
            partial.keep();
        }
        drop(PartialOutput::new(&untouched));

        assert!(!failed.exists());
        assert!(finished.exists());
        assert!(
            untouched.exists(),
            "a file we never created is not ours to delete"
        );
    }

    #[test]
    fn options_default_to_vbr_v2() {
        assert_eq!(Options::default().quality, Quality::Vbr(2));
        assert_eq!(
            Options::from_json(&json!({})).expect("{}"),
            Options::default()
        );
        assert_eq!(
            Options::from_json(&Value::Null).expect("null"),
            Options::default()
        );
    }

    #[test]
    fn options_accept_every_vbr_level_and_cbr() {
        for level in 0..=9u8 {
            let options = Options::from_json(&json!({ "quality": format!("V{level}") }))
                .expect("valid VBR level");
            assert_eq!(options.quality, Quality::Vbr(level));
        }
        assert_eq!(
            Options::from_json(&json!({"quality": "v0"}))
                .expect("lower case")
                .quality,
            Quality::Vbr(0)
        );
        for kbps in [32, 192, 320] {
            let options = Options::from_json(&json!({"quality": "cbr", "bitrate_kbps": kbps}))
                .expect("valid CBR");
            assert_eq!(options.quality, Quality::Cbr(kbps));
        }
    }

    #[test]
    fn options_reject_bad_input_naming_the_field() {
        let cases = [
            (json!({"qualty": "V2"}), "qualty"),
            (json!({"quality": "V10"}), "quality"),
            (json!({"quality": "V"}), "quality"),
            (json!({"quality": "high"}), "quality"),
            (json!({"quality": 2}), "quality"),
            (
                json!({"quality": "cbr", "bitrate_kbps": 999}),
                "bitrate_kbps",
            ),
            (
                json!({"quality": "cbr", "bitrate_kbps": 16}),
                "bitrate_kbps",
            ),
            (
                json!({"quality": "cbr", "bitrate_kbps": 192.5}),
                "bitrate_kbps",
            ),
            (
                json!({"quality": "cbr", "bitrate_kbps": "192"}),
                "bitrate_kbps",
            ),
            (json!({"quality": "cbr"}), "bitrate_kbps"),
            (
                json!({"quality": "V2", "bitrate_kbps": 192}),
                "bitrate_kbps",
            ),
            (json!({"bitrate_kbps": 192}), "bitrate_kbps"),
            (json!(["V2"]), "object"),
            (json!({"sample_rate": 96000}), "sample_rate"),
            (json!({"sample_rate": 8000}), "sample_rate"),
            (json!({"sample_rate": "44100"}), "sample_rate"),
            (json!({"channels": "5.1"}), "channels"),
            (json!({"channels": 2}), "channels"),
            (json!({"audio_track": -1}), "audio_track"),
            (json!({"audio_track": 1.5}), "audio_track"),
            (json!({"audio_track": "1"}), "audio_track"),
            (json!({"trim_start_s": -1}), "trim_start_s"),
            (json!({"trim_start_s": "1"}), "trim_start_s"),
            (json!({"trim_end_s": 0}), "trim_end_s"),
            (json!({"trim_start_s": 5, "trim_end_s": 2}), "trim_end_s"),
            (json!({"trim_start_s": 2, "trim_end_s": 2}), "trim_end_s"),
            (json!({"normalize": "yes"}), "normalize"),
            (json!({"normalize": 1}), "normalize"),
        ];
        for (value, field) in cases {
            match Options::from_json(&value).map_err(TranscodeError::from) {
                Err(TranscodeError::InvalidOptions(message)) => {
                    assert!(
                        message.contains(field),
                        "{value}: {message:?} does not name {field}"
                    )
                }
                other => panic!("{value}: expected InvalidOptions, got {other:?}"),
            }
        }
    }

    #[test]
    fn only_io_errors_are_worth_a_retry() {
        let io = TranscodeError::Io(io::Error::from(io::ErrorKind::StorageFull));
        assert!(!io.is_permanent());
        for permanent in [
            TranscodeError::NoAudio,
            TranscodeError::Unreadable("x".into()),
            TranscodeError::Decode("x".into()),
            TranscodeError::InvalidOptions("x".into()),
            TranscodeError::Encode("x".into()),
        ] {
            assert!(permanent.is_permanent(), "{permanent:?}");
        }
        assert_eq!(
            TranscodeError::NoAudio.to_string(),
            "the file has no audio track"
        );
        assert_eq!(
            TranscodeError::Decode("no audio frames could be decoded".into()).to_string(),
            "the audio track could not be decoded: no audio frames could be decoded"
        );
    }

    #[test]
    fn disk_full_from_ffmpeg_is_an_io_error() {
        let error = encode_error(
            "writing",
            ffmpeg::Error::Other {
                errno: ffmpeg::util::error::ENOSPC,
            },
        );
        assert!(matches!(error, TranscodeError::Io(_)), "{error:?}");
        let error = encode_error("writing", ffmpeg::Error::InvalidData);
        assert!(matches!(error, TranscodeError::Encode(_)), "{error:?}");
    }

    #[test]
    fn sample_format_choice_matches_libavfilter() {
        use ffmpeg::format::sample::Type::{Packed, Planar};
        let lame = [
            Sample::I32(Planar),
            Sample::F32(Planar),
            Sample::I16(Planar),
        ];
        let cases = [
            (Sample::F32(Planar), Sample::F32(Planar)),
            (Sample::F32(Packed), Sample::F32(Planar)),
            (Sample::I16(Packed), Sample::I16(Planar)),
            (Sample::I32(Packed), Sample::I32(Planar)),
            (Sample::U8(Packed), Sample::I16(Planar)),
            (Sample::F64(Planar), Sample::I32(Planar)),
        ];
        for (source, expected) in cases {
            assert_eq!(
                pick_sample_format(source, &lame),
                Some(expected),
                "{source:?}"
            );
        }
    }

    #[test]
    fn options_parse_rate_channels_track_trim_and_normalize() {
        let options = Options::from_json(&json!({
            "sample_rate": 22050,
            "channels": "mono",
            "audio_track": 1,
            "trim_start_s": 1.5,
            "trim_end_s": 3,
            "normalize": true,
        }))
        .expect("valid options");
        assert_eq!(
            options,
            Options {
                sample_rate: SampleRate::Hz(22_050),
                channels: Channels::Mono,
                audio_track: Some(1),
                trim_start_s: Some(1.5),
                trim_end_s: Some(3.0),
                normalize: true,
                ..Options::default()
            }
        );
        let keep = Options::from_json(&json!({
            "sample_rate": "keep",
            "channels": "Keep",
            "audio_track": null,
            "normalize": false,
        }))
        .expect("explicit defaults");
        assert_eq!(keep, Options::default());
        for rate in [22_050, 44_100, 48_000] {
            let options = Options::from_json(&json!({ "sample_rate": rate })).expect("rate");
            assert_eq!(options.sample_rate, SampleRate::Hz(rate));
        }
        let stereo = Options::from_json(&json!({"channels": "stereo"})).expect("stereo");
        assert_eq!(stereo.channels, Channels::Stereo);
        let end_only = Options::from_json(&json!({"trim_end_s": 0.5})).expect("end only");
        assert_eq!(end_only.trim_end_s, Some(0.5));
    }

    #[test]
    fn out_of_range_built_options_are_rejected() {
        for options in [
            Options {
                sample_rate: SampleRate::Hz(96_000),
                ..Options::default()
            },
            Options {
                trim_start_s: Some(f64::NAN),
                ..Options::default()
            },
            Options {
                trim_start_s: Some(3.0),
                trim_end_s: Some(1.0),
                ..Options::default()
            },
        ] {
            assert!(
                matches!(
                    options.validate().map_err(TranscodeError::from),
                    Err(TranscodeError::InvalidOptions(_))
                ),
                "{options:?}"
            );
        }
    }

    #[test]
    fn copy_is_allowed_only_when_nothing_needs_a_re_encode() {
        assert!(Options::default().allows_copy(44_100, 2));
        let same = Options {
            sample_rate: SampleRate::Hz(44_100),
            channels: Channels::Stereo,
            ..Options::default()
        };
        assert!(same.allows_copy(44_100, 2));
        for options in [
            Options {
                quality: Quality::Vbr(5),
                ..Options::default()
            },
            Options {
                sample_rate: SampleRate::Hz(22_050),
                ..Options::default()
            },
            Options {
                channels: Channels::Mono,
                ..Options::default()
            },
            Options {
                trim_start_s: Some(1.0),
                ..Options::default()
            },
            Options {
                trim_end_s: Some(1.0),
                ..Options::default()
            },
            Options {
                normalize: true,
                ..Options::default()
            },
        ] {
            assert!(!options.allows_copy(44_100, 2), "{options:?}");
        }
    }

    #[test]
    fn sample_rate_and_channels_are_applied() {
        let dir = Dir::new();
        let input = dir.str("stereo.m4a");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 -ac 2 -c:a aac",
            &[&input],
        );
        let phone = dir.str("phone.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=8000:duration=2 -ac 1 -c:a pcm_s16le",
            &[&phone],
        );
        let cases = [
            (
                &input,
                json!({"sample_rate": 22050, "channels": "mono"}),
                22_050,
                1,
            ),
            (&input, json!({"sample_rate": 48000}), 48_000, 2),
            (&phone, json!({"channels": "stereo"}), 8_000, 2),
            (
                &phone,
                json!({"sample_rate": 44100, "channels": "keep"}),
                44_100,
                1,
            ),
        ];
        for (index, (source, json, rate, channels)) in cases.into_iter().enumerate() {
            let options = Options::from_json(&json).expect("valid options");
            let output = dir.path(&format!("out{index}.mp3"));

            let (report, probe) = convert_ok(Path::new(source), &output, &options, "t");

            assert_eq!(report.sample_rate, rate, "{json}");
            assert_eq!(report.channels, channels, "{json}");
            assert_eq!(
                number(&audio_stream(&probe)["sample_rate"]),
                f64::from(rate)
            );
            assert_mp3_duration(&report, 2.0);
        }
    }

    /// A Matroska file with a 2 s mono 44.1 kHz track and a 3 s stereo
    /// 48 kHz one.
    fn two_track_file(dir: &Dir) -> String {
        let input = dir.str("two.mkv");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 \
             -f lavfi -i sine=frequency=660:sample_rate=48000:duration=3 \
             -map 0:a -map 1:a -c:a flac -ac:a:1 2",
            &[&input],
        );
        input
    }

    #[test]
    fn audio_track_picks_among_the_audio_streams() {
        let dir = Dir::new();
        let input = two_track_file(&dir);
        for (track, rate, channels, seconds) in [(0, 44_100, 1, 2.0), (1, 48_000, 2, 3.0)] {
            let options = Options::from_json(&json!({ "audio_track": track })).expect("valid");
            let output = dir.path(&format!("track{track}.mp3"));

            let (report, _) = convert_ok(Path::new(&input), &output, &options, "t");

            assert_eq!(report.sample_rate, rate, "track {track}");
            assert_eq!(report.channels, channels, "track {track}");
            assert_mp3_duration(&report, seconds);
        }
    }

    #[test]
    fn an_audio_track_out_of_range_is_a_clear_permanent_error() {
        let dir = Dir::new();
        let input = two_track_file(&dir);
        let output = dir.path("none.mp3");
        let options = Options::from_json(&json!({"audio_track": 2})).expect("valid");

        let error = convert(Path::new(&input), &output, &options, "t").expect_err("no track 2");

        assert!(error.is_permanent());
        assert_eq!(
            error.to_string(),
            "invalid conversion options: `audio_track` 2 is out of range: \
             the file has 2 audio tracks (numbered from 0)"
        );
        assert!(!output.exists());
    }

    #[test]
    fn trimming_keeps_the_asked_span() {
        let dir = Dir::new();
        let input = dir.str("six.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=6 -ac 2 -c:a pcm_s16le",
            &[&input],
        );
        let cases = [
            (json!({"trim_start_s": 1, "trim_end_s": 3.5}), 2.5),
            (json!({"trim_start_s": 4}), 2.0),
            (json!({"trim_end_s": 1.25}), 1.25),
            (json!({"trim_start_s": 5.5, "trim_end_s": 100}), 0.5),
        ];
        for (index, (json, seconds)) in cases.into_iter().enumerate() {
            let options = Options::from_json(&json).expect("valid options");
            let output = dir.path(&format!("trim{index}.mp3"));

            let (report, _) = convert_ok(Path::new(&input), &output, &options, "t");

            assert!(
                (report.duration_s - seconds).abs() < 0.002,
                "{json}: {} s instead of {seconds} s",
                report.duration_s
            );
        }
    }

    #[test]
    fn a_trim_start_past_the_end_is_an_invalid_option() {
        let dir = Dir::new();
        let input = dir.str("short.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=1 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("short.mp3");
        let options = Options::from_json(&json!({"trim_start_s": 10})).expect("valid");

        let error = convert(Path::new(&input), &output, &options, "t").expect_err("past end");

        assert!(
            matches!(&error, TranscodeError::InvalidOptions(message) if message.contains("trim_start_s")),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    /// `(mean_volume, max_volume)` in dB of the decoded file, from the
    /// `volumedetect` filter (which measures 16-bit samples, so a clipped
    /// signal reads 0.0 dB).
    fn volume(path: &Path) -> (f64, f64) {
        let output = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-i"])
            .arg(path)
            .args(["-map", "0:a", "-af", "volumedetect", "-f", "null", "-"])
            .output()
            .expect("ffmpeg CLI runs");
        assert!(output.status.success());
        let log = String::from_utf8_lossy(&output.stderr);
        let read = |key: &str| -> f64 {
            let line = log
                .lines()
                .find(|line| line.contains(key))
                .unwrap_or_else(|| panic!("no {key} in {log}"));
            let value = line.split(key).nth(1).expect("value").trim();
            value
                .trim_end_matches("dB")
                .trim()
                .parse()
                .expect("a number of dB")
        };
        (read("mean_volume:"), read("max_volume:"))
    }

    #[test]
    fn normalize_brings_a_quiet_recording_up() {
        let dir = Dir::new();
        let input = dir.str("quiet.wav");
        ffmpeg_cli(
            "-f lavfi -i aevalsrc=0.01*sin(2*PI*440*t)*(1+0.5*sin(2*PI*t)):s=44100:d=5 \
             -c:a pcm_s16le",
            &[&input],
        );
        let plain = dir.path("plain.mp3");
        let loud = dir.path("loud.mp3");
        let options = Options::from_json(&json!({"normalize": true})).expect("valid");

        let (plain_report, _) = convert_ok(Path::new(&input), &plain, &Options::default(), "t");
        let (loud_report, _) = convert_ok(Path::new(&input), &loud, &options, "t");

        let (plain_mean, _) = volume(&plain);
        let (loud_mean, loud_max) = volume(&loud);
        assert!(
            loud_mean > plain_mean + 15.0,
            "normalised {loud_mean} dB vs plain {plain_mean} dB"
        );
        assert!(loud_max < 0.0, "normalised peak {loud_max} dB");
        assert_eq!(loud_report.sample_rate, 44_100);
        assert_mp3_duration(&plain_report, 5.0);
        assert_mp3_duration(&loud_report, 5.0);
    }

    #[test]
    fn a_loud_5_1_source_is_downmixed_without_clipping() {
        let dir = Dir::new();
        let input = dir.str("loud51.wav");
        // Every channel in phase at -0.9 dBFS, as float so nothing clips in
        // the source: summed naively, the front channels would reach +7 dB.
        let tone = "0.9*sin(2*PI*440*t)";
        ffmpeg_cli(
            &format!(
                "-f lavfi -i aevalsrc={tone}|{tone}|{tone}|{tone}|{tone}|{tone}:c=5.1:s=48000:d=2 \
                 -c:a pcm_f32le"
            ),
            &[&input],
        );
        assert_eq!(audio_stream(&ffprobe(Path::new(&input)))["channels"], 6);
        let output = dir.path("loud51.mp3");
        // The CLI's downmix to float is not normalised: it clips.
        let cli = dir.str("cli.mp3");
        ffmpeg_cli("-i", &[&input, "-c:a", "libmp3lame", "-q:a", "2", &cli]);

        let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "5.1");

        assert_eq!(report.channels, 2);
        let (_, peak) = volume(&output);
        let (_, cli_peak) = volume(Path::new(&cli));
        assert!(peak < 0.0, "downmix peaks at {peak} dBFS");
        assert!(peak > -6.0, "downmix is needlessly quiet: {peak} dBFS");
        assert!(cli_peak >= 0.0, "the control did not clip: {cli_peak} dBFS");
    }

    #[test]
    fn tags_are_id3v2_4() {
        let dir = Dir::new();
        let input = dir.str("tagged.m4a");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=1 -c:a aac",
            &["-metadata", "artist=Someone", &input],
        );
        let output = dir.path("tagged.mp3");

        let (_, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "Stem");

        let bytes = std::fs::read(&output).expect("read MP3");
        assert_eq!(&bytes[..5], b"ID3\x04\x00");
        assert_eq!(probe["format"]["tags"]["title"], "Stem");
        assert_eq!(probe["format"]["tags"]["artist"], "Someone");
    }

    #[test]
    fn verification_rejects_a_wrong_duration_and_garbage() {
        assert!(check_duration(10.05, 10.0).is_ok());
        assert!(check_duration(100.9, 100.0).is_ok());
        assert!(check_duration(10.2, 10.0).is_err());
        assert!(check_duration(98.5, 100.0).is_err());

        let dir = Dir::new();
        let input = dir.str("tone.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:duration=4 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("tone.mp3");
        convert_ok(Path::new(&input), &output, &Options::default(), "t");
        let expect_4s = Written {
            expected_s: 4.0,
            copied: false,
        };
        assert!(verify(&output, &expect_4s, &Watchdog::new(None)).is_ok());
        let expect_5s = Written {
            expected_s: 5.0,
            copied: false,
        };
        let error = verify(&output, &expect_5s, &Watchdog::new(None)).expect_err("too short");
        assert!(
            error
                .to_string()
                .starts_with("the MP3 could not be encoded: the MP3 failed verification: it lasts"),
            "{error}"
        );
        let garbage = dir.path("garbage.mp3");
        std::fs::write(&garbage, [0u8; 4096]).expect("write garbage");
        let error = verify(&garbage, &expect_4s, &Watchdog::new(None)).expect_err("garbage");
        assert!(error.to_string().contains("failed verification"), "{error}");
        assert!(error.is_permanent());
    }

    /// An AVI with MPEG-4 video and MP3 audio, as old cameras and rips make.
    fn mp3_in_avi(dir: &Dir, name: &str, seconds: u32) -> String {
        let input = dir.str(name);
        ffmpeg_cli(
            &format!(
                "-f lavfi -i testsrc=size=160x120:rate=10:duration={seconds} \
                 -f lavfi -i sine=frequency=440:beep_factor=4:sample_rate=44100:duration={seconds} \
                 -c:v mpeg4 -c:a libmp3lame -q:a 4 -ac 2 -shortest"
            ),
            &["-metadata", "title=From AVI", &input],
        );
        input
    }

    #[test]
    fn mp3_audio_is_copied_without_re_encoding() {
        let dir = Dir::new();
        let input = mp3_in_avi(&dir, "clip.avi", 4);
        let output = dir.path("clip.mp3");

        let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "t");

        assert!(report.copied);
        assert_eq!(report.sample_rate, 44_100);
        assert_eq!(report.channels, 2);
        assert!((report.duration_s - 4.0).abs() < 0.1, "{report:?}");
        assert_eq!(probe["format"]["tags"]["title"], "From AVI");
        assert_eq!(&std::fs::read(&output).expect("read")[..5], b"ID3\x04\x00");
        // The very same MP3 frames: what `ffmpeg -i IN -vn -c:a copy` makes
        // (whose Xing header also lets players skip the decoder delay).
        let cli = dir.str("cli.mp3");
        ffmpeg_cli("-i", &[&input, "-vn", "-c:a", "copy", &cli]);
        assert_eq!(decoded_md5(&output), decoded_md5(Path::new(&cli)));

        let options = Options::from_json(&json!({"quality": "V6"})).expect("valid");
        let reencoded = dir.path("reencoded.mp3");
        let (report, _) = convert_ok(Path::new(&input), &reencoded, &options, "t");
        assert!(!report.copied);
    }

    #[test]
    fn an_mp3_stream_that_cannot_be_copied_cleanly_is_re_encoded() {
        let dir = Dir::new();
        let first = dir.str("first.ts");
        let second = dir.str("second.ts");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 \
             -c:a libmp3lame -ac 2",
            &[&first],
        );
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=660:sample_rate=48000:duration=2 \
             -c:a libmp3lame -ac 2 -output_ts_offset 2",
            &[&second],
        );
        let joined = dir.path("joined.ts");
        let mut bytes = std::fs::read(&first).expect("first part");
        bytes.extend(std::fs::read(&second).expect("second part"));
        std::fs::write(&joined, bytes).expect("joined file");
        let output = dir.path("joined.mp3");

        let (report, _) = convert_ok(&joined, &output, &Options::default(), "Joined");

        assert!(!report.copied, "a copy would switch rates mid-file");
        assert_eq!(report.sample_rate, 44_100);
        assert!((report.duration_s - 4.0).abs() < 0.1, "{report:?}");
    }

    #[test]
    fn copying_is_much_faster_than_re_encoding() {
        let dir = Dir::new();
        let input = mp3_in_avi(&dir, "minute.avi", 60);
        // A trim past the end changes nothing but forces a re-encode at the
        // same (default) quality.
        let reencode = Options::from_json(&json!({"trim_end_s": 3600})).expect("valid");

        let started = Instant::now();
        let copied = convert(
            Path::new(&input),
            &dir.path("copied.mp3"),
            &Options::default(),
            "t",
        )
        .expect("copy");
        let copy_time = started.elapsed();
        let started = Instant::now();
        let encoded = convert(Path::new(&input), &dir.path("encoded.mp3"), &reencode, "t")
            .expect("re-encode");
        let encode_time = started.elapsed();

        assert!(copied.copied);
        assert!(!encoded.copied);
        assert!((copied.duration_s - encoded.duration_s).abs() < 0.1);
        eprintln!(
            "60 s MP3-in-AVI: copy {copy_time:?}, re-encode {encode_time:?}, speedup {:.1}x",
            encode_time.as_secs_f64() / copy_time.as_secs_f64()
        );
    }

    #[test]
    fn progress_is_reported_at_most_once_a_second_and_ends_at_one() {
        let dir = Dir::new();
        let input = dir.str("long.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=48000:duration=40 -ac 2 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("long.mp3");
        let mut calls: Vec<(Instant, f64)> = Vec::new();

        let report = convert_with_progress(
            Path::new(&input),
            &output,
            &Options::default(),
            "t",
            &mut |fraction| calls.push((Instant::now(), fraction)),
        )
        .expect("conversion succeeds");

        assert_mp3_duration(&report, 40.0);
        assert!(calls.len() >= 2, "{calls:?}");
        assert_eq!(calls.last().map(|(_, fraction)| *fraction), Some(1.0));
        assert!(calls[0].1 < 0.1, "starts near 0: {calls:?}");
        for pair in calls.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "not monotonic: {calls:?}");
            assert!((0.0..=1.0).contains(&pair[1].1));
        }
        // All but the final "done" call are at least a second apart.
        for pair in calls[..calls.len() - 1].windows(2) {
            assert!(pair[1].0 - pair[0].0 >= PROGRESS_INTERVAL, "{calls:?}");
        }
        eprintln!(
            "progress calls: {:?}",
            calls.iter().map(|(_, f)| *f).collect::<Vec<_>>()
        );
    }

    #[test]
    fn progress_is_throttled_and_relative_to_the_span() {
        let mut calls = Vec::new();
        let mut record = |fraction: f64| calls.push(fraction);
        let mut progress = Progress::new(&mut record);
        // Trimmed to 10..30 s of the source.
        progress.set_span(10.0, Some(30.0));
        let started = Instant::now();
        let mut position = 0.0;
        while started.elapsed() < Duration::from_millis(1_300) {
            progress.at(position);
            position += 0.5;
            std::thread::sleep(Duration::from_millis(20));
        }
        progress.finish();

        // One call right away (before the span: 0), one a second later
        // (clamped to 1 by then), and the final one.
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls[0], 0.0);
        assert_eq!(calls[2], 1.0);

        let mut silent = Vec::new();
        let mut record = |fraction: f64| silent.push(fraction);
        let mut unknown = Progress::new(&mut record);
        unknown.set_span(0.0, None);
        unknown.at(5.0);
        unknown.finish();
        assert_eq!(silent, [1.0], "no duration, no fractions");
    }

    /// The old verification: decodes every frame and counts the samples.
    fn decoded_samples(path: &Path) -> (u64, u32) {
        let mut ictx = format::input(path).expect("open MP3");
        let stream = ictx.streams().best(media::Type::Audio).expect("audio");
        let index = stream.index();
        let mut decoder = codec::context::Context::from_parameters(stream.parameters())
            .and_then(|context| context.decoder().audio())
            .expect("decoder");
        let mut frame = frame::Audio::empty();
        let (mut samples, mut rate) = (0u64, 0u32);
        let mut drain = |decoder: &mut codec::decoder::Audio| {
            while decoder.receive_frame(&mut frame).is_ok() {
                samples += frame.samples() as u64;
                rate = frame.rate();
            }
        };
        for (stream, packet) in ictx.packets() {
            if stream.index() == index {
                decoder.send_packet(&packet).expect("decodes");
                drain(&mut decoder);
            }
        }
        decoder.send_eof().expect("eof");
        drain(&mut decoder);
        (samples, rate)
    }

    #[test]
    fn counting_frame_headers_gives_the_length_a_full_decode_gives() {
        let dir = Dir::new();
        let cases: [(&str, &str, serde_json::Value); 6] = [
            (
                "stereo.wav",
                "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=7.3 -ac 2 -c:a pcm_s16le",
                json!({}),
            ),
            (
                "mono8k.wav",
                "-f lavfi -i sine=frequency=300:sample_rate=8000:duration=3.1 -c:a pcm_s16le",
                json!({}),
            ),
            (
                "cbr.wav",
                "-f lavfi -i sine=frequency=440:sample_rate=48000:duration=2 -c:a pcm_s16le",
                json!({"quality": "cbr", "bitrate_kbps": 96}),
            ),
            (
                "trimmed.wav",
                "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=6 -c:a pcm_s16le",
                json!({"trim_start_s": 1.25, "trim_end_s": 4.5}),
            ),
            (
                "short.wav",
                "-f lavfi -i sine=frequency=440:sample_rate=22050:duration=0.05 -c:a pcm_s16le",
                json!({}),
            ),
            (
                "copied.mp3",
                "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=5 -c:a libmp3lame -q:a 4",
                json!({}),
            ),
        ];
        for (name, args, options) in cases {
            let input = dir.str(name);
            ffmpeg_cli(args, &[&input]);
            let output = dir.path(&format!("{name}.out.mp3"));
            let options = Options::from_json(&options).expect("valid options");

            let report = convert(Path::new(&input), &output, &options, "t").expect(name);

            let (samples, rate) = decoded_samples(&output);
            assert_eq!(rate, report.sample_rate, "{name}");
            assert_eq!(
                report.duration_s,
                samples as f64 / f64::from(rate),
                "{name}: counted {} s, decoded {samples} samples",
                report.duration_s
            );
        }
    }

    #[test]
    fn frame_headers_are_read_for_every_mpeg_version_and_refused_otherwise() {
        // MPEG 1 layer III, 128 kbit/s, 44.1 kHz, joint stereo.
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xfb, 0x90, 0x64]),
            Some(FrameHeader {
                sample_rate: 44_100,
                channels: 2,
                samples: 1152
            })
        );
        // MPEG 2 layer III, 24 kHz, mono.
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xf3, 0x54, 0xc4]),
            Some(FrameHeader {
                sample_rate: 24_000,
                channels: 1,
                samples: 576
            })
        );
        // MPEG 2.5 layer III, 8 kHz, mono.
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xe3, 0x18, 0xc4]),
            Some(FrameHeader {
                sample_rate: 8_000,
                channels: 1,
                samples: 576
            })
        );
        assert_eq!(FrameHeader::parse(&[0xff, 0xfb, 0x90]), None, "too short");
        assert_eq!(FrameHeader::parse(&[0x49, 0x44, 0x33, 0x04]), None, "ID3");
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xeb, 0x90, 0x64]),
            None,
            "reserved version"
        );
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xfb, 0x9c, 0x64]),
            None,
            "reserved rate"
        );
        assert_eq!(
            FrameHeader::parse(&[0xff, 0xfb, 0xf0, 0x64]),
            None,
            "bad bit rate"
        );
    }

    #[test]
    fn verification_rejects_a_truncated_or_damaged_mp3() {
        let dir = Dir::new();
        let input = dir.str("tone.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=20 -ac 2 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("tone.mp3");
        convert_ok(Path::new(&input), &output, &Options::default(), "t");
        let bytes = std::fs::read(&output).expect("read MP3");
        let expect_20s = Written {
            expected_s: 20.0,
            copied: false,
        };

        // Cut off half way, as a full disk would.
        let truncated = dir.path("truncated.mp3");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
        let error =
            verify(&truncated, &expect_20s, &Watchdog::new(None)).expect_err("half is missing");
        assert!(error.to_string().contains("it lasts"), "{error}");

        // A fifth of the frames overwritten with zeros.
        let mut zeroed = bytes.clone();
        let (from, to) = (bytes.len() * 2 / 5, bytes.len() * 3 / 5);
        zeroed[from..to].fill(0);
        let damaged = dir.path("zeroed.mp3");
        std::fs::write(&damaged, &zeroed).expect("write");
        let error =
            verify(&damaged, &expect_20s, &Watchdog::new(None)).expect_err("frames are missing");
        assert!(error.to_string().contains("failed verification"), "{error}");

        // Only the ID3 tag survives.
        let tag_only = dir.path("tag-only.mp3");
        std::fs::write(&tag_only, &bytes[..200]).expect("write");
        let error = verify(&tag_only, &expect_20s, &Watchdog::new(None)).expect_err("no audio");
        assert!(error.to_string().contains("failed verification"), "{error}");
        assert!(error.is_permanent());
    }

    #[test]
    fn a_conversion_over_its_time_limit_stops_and_leaves_nothing() {
        let dir = Dir::new();
        let input = dir.str("long.m4a");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=600 -c:a aac -b:a 48k",
            &[&input],
        );
        let output = dir.path("long.mp3");
        let limit = TimeLimit {
            factor: 0.0,
            min: Duration::from_millis(300),
        };

        let started = Instant::now();
        let error = convert_within(
            Path::new(&input),
            &output,
            &Options::default(),
            "t",
            Some(limit),
            &mut |_| {},
        )
        .expect_err("10 minutes do not convert in 0.3 s");
        let took = started.elapsed();

        assert!(
            matches!(error, TranscodeError::TimedOut { limit_s } if limit_s == 0.3),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the conversion exceeded its time limit of 0.3 s"
        );
        assert!(error.is_permanent());
        assert!(took < Duration::from_secs(2), "it went on for {took:?}");
        assert!(!output.exists(), "the partial MP3 was removed");

        // No time at all: stopped while FFmpeg opens the file.
        let none = TimeLimit {
            factor: 0.0,
            min: Duration::ZERO,
        };
        let error = convert_within(
            Path::new(&input),
            &output,
            &Options::default(),
            "t",
            Some(none),
            &mut |_| {},
        )
        .expect_err("no time");
        assert!(
            matches!(error, TranscodeError::TimedOut { .. }),
            "{error:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn the_time_limit_scales_with_the_input() {
        let dir = Dir::new();
        let input = dir.str("tone.wav");
        ffmpeg_cli(
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=30 -c:a pcm_s16le",
            &[&input],
        );
        let output = dir.path("tone.mp3");
        // 0.1 s alone would not do; 0.1 s + 0.2 s per second of input does.
        let limit = TimeLimit {
            factor: 0.2,
            min: Duration::from_millis(100),
        };

        let report = convert_within(
            Path::new(&input),
            &output,
            &Options::default(),
            "t",
            Some(limit),
            &mut |_| {},
        )
        .expect("6.1 s is plenty for 30 s of audio");

        assert_mp3_duration(&report, 30.0);
        let watchdog = Watchdog::new(Some(limit));
        assert_eq!(watchdog.allowance_s(), Some(0.1));
        watchdog.cover(30.0);
        watchdog.cover(f64::NAN);
        watchdog.cover(-4.0);
        assert_eq!(watchdog.allowance_s(), Some(0.1 + 0.2 * 30.0));
        // A file that holds more than it says is judged by what it holds.
        watchdog.cover(50.0);
        watchdog.cover(40.0);
        assert_eq!(watchdog.allowance_s(), Some(0.1 + 0.2 * 50.0));
        assert!(!watchdog.expired());
        assert_eq!(Watchdog::new(None).allowance_s(), None);
        assert_eq!(seconds_text(0.25), "0.3");
        assert_eq!(seconds_text(1260.0), "1260");
    }

    #[test]
    fn init_is_idempotent() {
        init();
        init();
    }
}
