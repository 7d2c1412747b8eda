//! Verification of the written MP3 before a job is done: it opens, every
//! frame header is sound, samples at the start, middle and end decode, and
//! it lasts as long as the span we converted.

use std::path::Path;

use ffmpeg_next as ffmpeg;

use ffmpeg::util::error::EAGAIN;
use ffmpeg::{Packet, codec, format, frame, media};

use super::limit::Watchdog;
use super::{Report, TranscodeError, Written, ffmpeg_path};

/// Packets decoded at each of the start, middle and end of the MP3.
pub(super) const VERIFY_WINDOW: usize = 4;

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
pub(super) fn verify(
    output: &Path,
    written: &Written,
    watchdog: &Watchdog,
) -> Result<Report, TranscodeError> {
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
        timings: super::Timings::default(),
    })
}

/// The parts of an MPEG audio frame header verification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub(super) sample_rate: u32,
    pub(super) channels: u16,
    /// Samples per channel the frame decodes to.
    pub(super) samples: u32,
}

impl FrameHeader {
    /// Reads the 4-byte header at the start of `frame` (ISO 11172-3 and
    /// 13818-3, plus the MPEG 2.5 extension); `None` if it is not one.
    pub(super) fn parse(frame: &[u8]) -> Option<Self> {
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

    pub(super) fn same_format(&self, other: &FrameHeader) -> bool {
        self.sample_rate == other.sample_rate && self.channels == other.channels
    }
}

/// Samples the decoder drops from a packet for gapless playback (the
/// `AV_PKT_DATA_SKIP_SAMPLES` side data: 32-bit little-endian counts from
/// the start and from the end of the frame).
pub(super) fn skip_samples(packet: &Packet) -> u64 {
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
pub(super) struct Sampler {
    decoder: codec::decoder::Audio,
    frame: frame::Audio,
    /// Samples the current window produced so far, and its name.
    window: Option<(&'static str, u64)>,
    /// Rate and channels of the decoded frames.
    format: Option<(u32, u16)>,
}

impl Sampler {
    pub(super) fn new(decoder: codec::decoder::Audio) -> Self {
        Sampler {
            decoder,
            frame: frame::Audio::empty(),
            window: None,
            format: None,
        }
    }

    pub(super) fn decode(
        &mut self,
        packet: &Packet,
        window: &'static str,
    ) -> Result<(), TranscodeError> {
        self.window.get_or_insert((window, 0));
        self.decoder
            .send_packet(packet)
            .map_err(|error| unverified(format!("its {window} does not decode: {error}")))?;
        self.receive(window)
    }

    pub(super) fn receive(&mut self, window: &'static str) -> Result<(), TranscodeError> {
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
    pub(super) fn restart(&mut self) -> Result<(), TranscodeError> {
        self.close_window()?;
        self.decoder.flush();
        Ok(())
    }

    pub(super) fn close_window(&mut self) -> Result<(), TranscodeError> {
        match self.window.take() {
            Some((name, 0)) => Err(unverified(format!("its {name} decodes to no audio"))),
            _ => Ok(()),
        }
    }

    /// Drains the decoder and closes the last window.
    pub(super) fn finish(&mut self) -> Result<(), TranscodeError> {
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
pub(super) fn check_duration(decoded_s: f64, expected_s: f64) -> Result<(), String> {
    let tolerance = (expected_s * 0.01).max(0.1);
    if (decoded_s - expected_s).abs() <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "it lasts {decoded_s:.3} s instead of {expected_s:.3} s"
        ))
    }
}

pub(super) fn unverified(reason: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Encode(format!("the MP3 failed verification: {reason}"))
}
