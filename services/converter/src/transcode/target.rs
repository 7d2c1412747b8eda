//! What the encoder is opened with: the job's options applied to the
//! decoded source's format (rate, channels, sample format, trimmed span).

use ffmpeg_next as ffmpeg;

use ffmpeg::format::Sample;
use ffmpeg::{ChannelLayout, frame};

use super::{Channels, Options, SampleRate, TranscodeError};

/// `FF_QP2LAMBDA`: FFmpeg expresses `-q:a N` as `global_quality = N * 118`.
pub(super) const FF_QP2LAMBDA: usize = 118;

/// Every sample rate MPEG audio layer III (1, 2 and 2.5) can carry.
pub(super) const MP3_SAMPLE_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// The rate used when the source rate is not one MP3 can carry.
pub(super) const FALLBACK_SAMPLE_RATE: u32 = 44_100;

/// The properties of decoded audio a convert graph is built for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SourceFormat {
    pub(super) format: Sample,
    pub(super) rate: u32,
    pub(super) channels: u16,
    /// An unknown layout is replaced by the default for the count (which is
    /// empty only for counts FFmpeg has no default for).
    pub(super) layout: ChannelLayout,
}

impl SourceFormat {
    pub(super) fn of(frame: &frame::Audio) -> Self {
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
pub(super) struct Target {
    pub(super) format: Sample,
    pub(super) rate: u32,
    pub(super) layout: ChannelLayout,
    /// First output sample kept (0 when not trimming the start).
    pub(super) start_sample: i64,
    /// First output sample dropped, when trimming the end.
    pub(super) end_sample: Option<i64>,
    pub(super) normalize: bool,
}

impl Target {
    pub(super) fn for_source(
        source: &SourceFormat,
        options: &Options,
    ) -> Result<Self, TranscodeError> {
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

    pub(super) fn channels(&self) -> u16 {
        u16::try_from(self.layout.channels()).unwrap_or(2)
    }
}

pub(super) fn lame() -> Result<ffmpeg::Codec, TranscodeError> {
    ffmpeg::encoder::find_by_name("libmp3lame").ok_or_else(|| {
        TranscodeError::Encode("this FFmpeg build has no libmp3lame encoder".to_owned())
    })
}

/// Picks the encoder sample format libavfilter's negotiation would pick for
/// `source` (`swap_sample_fmts` in `avfiltergraph.c`), so that our output is
/// the CLI's: the same type if available, else the closest size not smaller.
pub(super) fn pick_sample_format(source: Sample, supported: &[Sample]) -> Option<Sample> {
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
