//! Turns the audio track of a media file on disk into an MP3 file on disk.
//!
//! Everything runs in-process on the FFmpeg libraries (through `ffmpeg-next`)
//! and blocks the calling thread, so async callers wrap [`convert`] in
//! `tokio::task::spawn_blocking`.
//!
//! The pipeline is the one the `ffmpeg` CLI builds for
//! `ffmpeg -i IN -vn -c:a libmp3lame -q:a 2 OUT.mp3`:
//!
//! ```text
//! demux ──(best audio stream only)──▶ decode ──▶ convert graph ──▶ framer graph ──▶ libmp3lame ──▶ mp3 muxer
//!                                     abuffer → aformat → abuffersink   (frames of frame_size() samples)
//! ```
//!
//! * The *convert* graph resamples, downmixes and changes the sample format
//!   into what the encoder was opened with. It is built from the first decoded
//!   frame, and rebuilt if a later frame arrives with other properties (a
//!   stream that switches sample rate half way through, as broadcast captures
//!   do).
//! * The *framer* graph never changes: it re-chunks the converted audio into
//!   exactly `frame_size()` samples, because LAME only accepts a short frame as
//!   the very last one. Keeping it separate from the convert graph means a
//!   rebuild never pushes a short frame into the middle of the stream.
//! * The encoder and the output file are created lazily, from the first decoded
//!   frame, so a file whose audio cannot be decoded at all leaves nothing behind.

use std::io;
use std::path::Path;
use std::sync::Once;

use ffmpeg_next as ffmpeg;

use ffmpeg::format::Sample;
use ffmpeg::util::error::{EAGAIN, EIO, EMFILE, ENFILE};
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, codec, filter, format, frame, media};
use serde_json::Value;

/// `FF_QP2LAMBDA`: FFmpeg expresses `-q:a N` as `global_quality = N * 118`.
const FF_QP2LAMBDA: usize = 118;

/// Every sample rate MPEG audio layer III (1, 2 and 2.5) can carry.
const MP3_SAMPLE_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// The rate used when the source rate is not one MP3 can carry.
const FALLBACK_SAMPLE_RATE: u32 = 44_100;

/// Tags copied from the source, besides the title which the caller provides.
const COPIED_TAGS: [&str; 4] = ["artist", "album", "date", "comment"];

/// Units of `AVFormatContext::duration`.
const AV_TIME_BASE: f64 = 1_000_000.0;

/// How many unreadable packets in a row we skip before giving up on the file.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 1_000;

/// Conversion settings.
///
/// `Default` is LAME VBR V2 (`-q:a 2`), the source sample rate when MP3 allows
/// it (else 44100 Hz), and the source channels up to stereo (more are downmixed
/// to stereo).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    /// How LAME spends bits.
    pub quality: Quality,
}

/// LAME's rate control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quality {
    /// Variable bit rate, `V0` (best, about 245 kbit/s) to `V9` (smallest).
    Vbr(u8),
    /// Constant bit rate in kbit/s, 32 to 320. LAME rounds to the nearest
    /// bit rate the output sample rate allows.
    Cbr(u32),
}

impl Default for Quality {
    fn default() -> Self {
        Quality::Vbr(2)
    }
}

impl Options {
    /// Reads the options object of a conversion job.
    ///
    /// `{}` (or `null`) gives the defaults. Accepted keys:
    /// `{"quality": "V0".."V9"}` or `{"quality": "cbr", "bitrate_kbps": 32..=320}`.
    /// Unknown keys and bad values are rejected with a message naming the field.
    pub fn from_json(value: &Value) -> Result<Options, TranscodeError> {
        let object = match value {
            Value::Null => return Ok(Options::default()),
            Value::Object(object) => object,
            _ => return Err(invalid("options must be a JSON object")),
        };
        if let Some(unknown) = object
            .keys()
            .find(|key| !matches!(key.as_str(), "quality" | "bitrate_kbps"))
        {
            return Err(invalid(format!(
                "unknown field `{unknown}` (expected `quality` or `bitrate_kbps`)"
            )));
        }

        let bitrate_kbps = object
            .get("bitrate_kbps")
            .map(|value| {
                value
                    .as_u64()
                    .and_then(|kbps| u32::try_from(kbps).ok())
                    .ok_or_else(|| invalid("`bitrate_kbps` must be a whole number of kbit/s"))
            })
            .transpose()?;
        let quality = object
            .get("quality")
            .map(|value| {
                value
                    .as_str()
                    .ok_or_else(|| invalid("`quality` must be a string: \"V0\"..\"V9\" or \"cbr\""))
            })
            .transpose()?;

        let quality = match (quality, bitrate_kbps) {
            (None, None) => Quality::default(),
            (Some(quality), bitrate) if quality.eq_ignore_ascii_case("cbr") => {
                let kbps = bitrate.ok_or_else(|| {
                    invalid("`bitrate_kbps` is required when `quality` is \"cbr\"")
                })?;
                Quality::Cbr(kbps)
            }
            (Some(quality), None) => Quality::Vbr(parse_vbr(quality)?),
            (_, Some(_)) => {
                return Err(invalid(
                    "`bitrate_kbps` is only allowed together with `\"quality\": \"cbr\"`",
                ));
            }
        };
        let options = Options { quality };
        options.validate()?;
        Ok(options)
    }

    /// Checks ranges, for options built in code rather than parsed.
    fn validate(&self) -> Result<(), TranscodeError> {
        match self.quality {
            Quality::Vbr(level) if level > 9 => Err(invalid(format!(
                "`quality` V{level} is out of range: use V0 to V9"
            ))),
            Quality::Cbr(kbps) if !(32..=320).contains(&kbps) => Err(invalid(format!(
                "`bitrate_kbps` {kbps} is out of range: use 32 to 320"
            ))),
            _ => Ok(()),
        }
    }
}

/// Parses `"V0"`..`"V9"` (case-insensitive).
fn parse_vbr(quality: &str) -> Result<u8, TranscodeError> {
    let level = quality
        .strip_prefix(['V', 'v'])
        .filter(|digits| digits.len() == 1)
        .and_then(|digit| digit.parse::<u8>().ok());
    level.ok_or_else(|| {
        invalid(format!(
            "`quality` must be \"V0\"..\"V9\" or \"cbr\", not {quality:?}"
        ))
    })
}

fn invalid(message: impl Into<String>) -> TranscodeError {
    TranscodeError::InvalidOptions(message.into())
}

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Playing time of the MP3, as FFmpeg reads it back from the written file.
    pub duration_s: f64,
    /// Nominal bit rate for CBR, average bit rate for VBR, in kbit/s.
    pub bitrate_kbps: u32,
    /// Sample rate of the MP3 in Hz.
    pub sample_rate: u32,
    /// 1 (mono) or 2 (stereo).
    pub channels: u16,
    /// Size of the MP3 file, tags included.
    pub output_bytes: u64,
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

/// Converts the best audio track of `input` into an MP3 at `output`.
///
/// `title` becomes the MP3's title tag (an empty title keeps the source's);
/// artist, album, date and comment tags are copied from the source. On
/// failure no file is left at `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
) -> Result<Report, TranscodeError> {
    init();
    options.validate()?;
    let _span = tracing::debug_span!("transcode", input = %input.display()).entered();

    let mut partial = PartialOutput::new(output);
    let encoded = transcode(input, output, options, title, &mut partial)?;
    let report = read_back(output, &encoded)?;
    partial.keep();
    tracing::debug!(
        duration_s = report.duration_s,
        bitrate_kbps = report.bitrate_kbps,
        sample_rate = report.sample_rate,
        channels = report.channels,
        output_bytes = report.output_bytes,
        "MP3 written"
    );
    Ok(report)
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

/// What the encoder was set up with, known once the output is finished.
struct Encoded {
    sample_rate: u32,
    channels: u16,
    /// Samples handed to the encoder (the source length at the output rate).
    samples: u64,
}

fn transcode(
    input: &Path,
    output: &Path,
    options: &Options,
    title: &str,
    partial: &mut PartialOutput<'_>,
) -> Result<Encoded, TranscodeError> {
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
    let mut ictx = format::input_with_dictionary(input_str, open_options).map_err(|error| {
        match os_error(error) {
            Some(io) => TranscodeError::Io(io),
            None => TranscodeError::Unreadable(error.to_string()),
        }
    })?;

    let (stream_index, time_base, parameters, tags) = {
        let stream = ictx
            .streams()
            .best(media::Type::Audio)
            .ok_or(TranscodeError::NoAudio)?;
        let tags = output_tags(&ictx, &stream, title);
        (
            stream.index(),
            stream.time_base(),
            stream.parameters(),
            tags,
        )
    };

    let mut decoder = codec::context::Context::from_parameters(parameters)
        .map_err(|error| decode_error("reading the stream parameters", error))?
        .decoder();
    // FFmpeg decoders get the packet time base from here, not from the stream.
    decoder.set_packet_time_base(time_base);
    let decoder = decoder
        .audio()
        .map_err(|error| decode_error("opening the decoder", error))?;

    let mut transcoder = Transcoder {
        decoder,
        decoded: frame::Audio::empty(),
        bad_packets: 0,
        time_base,
        encoding: None,
        output: output_str,
        options,
        tags,
        partial,
    };

    let mut consecutive_bad = 0u32;
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => consecutive_bad = 0,
            Err(ffmpeg::Error::Eof) => break,
            // Demuxers resync after corrupt data; skip it like the CLI does.
            Err(ffmpeg::Error::InvalidData) if consecutive_bad < MAX_CONSECUTIVE_BAD_PACKETS => {
                consecutive_bad += 1;
                transcoder.bad_packets += 1;
                continue;
            }
            Err(error) => {
                return Err(match os_error(error) {
                    Some(io) => TranscodeError::Io(io),
                    None => TranscodeError::Decode(format!("reading the file: {error}")),
                });
            }
        }
        // Video, subtitles and other audio tracks are never decoded.
        if packet.stream() == stream_index {
            transcoder.decode_packet(&packet)?;
        }
    }
    drop(ictx);
    transcoder.finish()
}

/// The decoding half; creates the encoding half from the first decoded frame.
struct Transcoder<'a, 'p> {
    decoder: codec::decoder::Audio,
    /// Reused for every decoded frame.
    decoded: frame::Audio,
    /// Packets the demuxer or decoder rejected and we skipped.
    bad_packets: u64,
    /// Time base of the audio stream, in which decoded timestamps are expressed.
    time_base: Rational,
    encoding: Option<Encoding>,
    output: &'a str,
    options: &'a Options,
    tags: Dictionary<'static>,
    partial: &'a mut PartialOutput<'p>,
}

impl Transcoder<'_, '_> {
    fn decode_packet(&mut self, packet: &Packet) -> Result<(), TranscodeError> {
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => self.bad_packets += 1,
            Err(error) => return Err(decode_error("decoding", error)),
        }
        self.drain_decoder()
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

        let encoding = match &mut self.encoding {
            Some(encoding) => encoding,
            None => {
                let target = Target::for_source(&source)?;
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

/// What the encoder is opened with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Target {
    format: Sample,
    rate: u32,
    layout: ChannelLayout,
}

impl Target {
    fn for_source(source: &SourceFormat) -> Result<Self, TranscodeError> {
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
        let rate = if MP3_SAMPLE_RATES.contains(&source.rate) {
            source.rate
        } else {
            FALLBACK_SAMPLE_RATE
        };
        let layout = if source.channels == 1 {
            ChannelLayout::MONO
        } else {
            ChannelLayout::STEREO
        };
        Ok(Target {
            format,
            rate,
            layout,
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
    /// that the encoder sees a gapless, monotonic stream.
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
        octx.write_header()
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
        Ok(Encoded {
            sample_rate: self.target.rate,
            channels: self.target.channels(),
            samples: u64::try_from(self.next_pts).unwrap_or(0),
        })
    }
}

/// `abuffer -> aformat(target) -> abuffersink`: resampling, downmixing and
/// sample format conversion, inserted by libavfilter only where needed.
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
    let spec = format!(
        "aformat=sample_fmts={}:sample_rates={}:channel_layouts=0x{:x}",
        target.format.name(),
        target.rate,
        target.layout.bits(),
    );
    graph(&args, &spec)
}

/// `abuffer -> abuffersink` in the encoder's format, handing out exactly
/// `frame_size` samples per frame (fewer only for the last one).
fn framer_graph(target: &Target, frame_size: u32) -> Result<filter::Graph, ffmpeg::Error> {
    let args = format!(
        "time_base=1/{rate}:sample_rate={rate}:sample_fmt={}:channel_layout=0x{:x}",
        target.format.name(),
        target.layout.bits(),
        rate = target.rate,
    );
    let mut graph = graph(&args, "anull")?;
    if frame_size > 0 {
        graph
            .get("out")
            .ok_or(ffmpeg::Error::FilterNotFound)?
            .sink()
            .set_frame_size(frame_size);
    }
    Ok(graph)
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

/// The MP3's tags: the given title, plus artist/album/date/comment from the
/// container or, failing that, the audio stream (Ogg and Matroska often tag
/// the stream).
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
    if !title.is_empty() {
        tags.set("title", title);
    } else if let Some(title) = source("title") {
        tags.set("title", &title);
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

/// Opens the finished MP3 the way a player would and fills the report.
fn read_back(output: &Path, encoded: &Encoded) -> Result<Report, TranscodeError> {
    let output_bytes = std::fs::metadata(output)?.len();
    let path = ffmpeg_path(output)
        .ok_or_else(|| TranscodeError::Encode("the output path is not valid UTF-8".to_owned()))?;
    let ictx =
        format::input(path).map_err(|error| encode_error("reading the written MP3 back", error))?;

    let stream = ictx
        .streams()
        .best(media::Type::Audio)
        .ok_or_else(|| TranscodeError::Encode("the written MP3 has no audio stream".to_owned()))?;

    // FFmpeg's MP3 demuxer counts whole frames, so this includes LAME's
    // encoder delay and end padding (about 50 ms at 44.1 kHz), just as
    // `ffprobe` and players that show the Xing frame count do.
    let probed = ictx.duration();
    let duration_s = if probed > 0 {
        probed as f64 / AV_TIME_BASE
    } else {
        encoded.samples as f64 / f64::from(encoded.sample_rate)
    };
    // From the first frame header for CBR, from the Xing header for VBR.
    let stream_bit_rate = stream.parameters().bit_rate();
    let bitrate_kbps = if stream_bit_rate > 0 {
        (stream_bit_rate as f64 / 1000.0).round() as u32
    } else if duration_s > 0.0 {
        (output_bytes as f64 * 8.0 / duration_s / 1000.0).round() as u32
    } else {
        0
    };
    Ok(Report {
        duration_s,
        bitrate_kbps,
        sample_rate: encoded.sample_rate,
        channels: encoded.channels,
        output_bytes,
    })
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

    use serde_json::json;

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
        let probed = number(&probe["format"]["duration"]);
        assert!(
            (report.duration_s - probed).abs() < 0.01,
            "report says {} s, ffprobe {probed} s",
            report.duration_s
        );
        (report, probe)
    }

    /// The MP3 lasts as long as the source plus LAME's delay (1105 samples)
    /// and end padding (up to about two frames), which FFmpeg's demuxer counts.
    fn assert_mp3_duration(report: &Report, source_s: f64) {
        let rate = f64::from(report.sample_rate);
        let frame = if report.sample_rate >= 32_000 {
            1152.0
        } else {
            576.0
        };
        let most = source_s + (1105.0 + 3.0 * frame) / rate;
        assert!(
            (source_s - 0.005..=most).contains(&report.duration_s),
            "{} s is not between {source_s} s and {most} s",
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
        let tags = &probe["format"]["tags"];
        assert_eq!(tags["title"], "My talk: part 1");
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
            ("stereo.mp4", "-c:a aac -ac 2"),
            ("surround.m4a", "-af aformat=channel_layouts=5.1 -c:a aac"),
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
        ];
        for (value, field) in cases {
            match Options::from_json(&value) {
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
    fn init_is_idempotent() {
        init();
        init();
    }
}
