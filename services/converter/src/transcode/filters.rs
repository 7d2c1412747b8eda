//! The audio filter graphs: resampling, downmixing (normalised, so a loud
//! surround source never clips) and sample format conversion; trimming,
//! loudness normalisation and framing for the encoder.

use ffmpeg_next as ffmpeg;

use ffmpeg::util::error::EAGAIN;
use ffmpeg::{Rational, filter, frame};

use super::target::{SourceFormat, Target};

/// `abuffer -> [aresample] -> aformat(target) -> abuffersink`: resampling,
/// downmixing and sample format conversion.
///
/// Without a downmix libavfilter inserts the resampler only where needed, as
/// the CLI does. With one we insert it ourselves, asking swresample to
/// normalise its matrix (`rematrix_maxval=1`): by default it only does so for
/// integer output, and a loud 5.1 source downmixed to float would clip (the
/// CLI's does).
pub(super) fn convert_graph(
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
pub(super) fn framer_graph(
    target: &Target,
    frame_size: u32,
) -> Result<filter::Graph, ffmpeg::Error> {
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
pub(super) fn framer_spec(target: &Target) -> String {
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

pub(super) fn graph(source_args: &str, spec: &str) -> Result<filter::Graph, ffmpeg::Error> {
    let abuffer = filter::find("abuffer").ok_or(ffmpeg::Error::FilterNotFound)?;
    let abuffersink = filter::find("abuffersink").ok_or(ffmpeg::Error::FilterNotFound)?;
    let mut graph = filter::Graph::new();
    graph.add(&abuffer, "in", source_args)?;
    graph.add(&abuffersink, "out", "")?;
    graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    Ok(graph)
}

pub(super) fn source_add(
    graph: &mut filter::Graph,
    frame: &frame::Audio,
) -> Result<(), ffmpeg::Error> {
    graph
        .get("in")
        .ok_or(ffmpeg::Error::FilterNotFound)?
        .source()
        .add(frame)
}

pub(super) fn source_flush(graph: &mut filter::Graph) -> Result<(), ffmpeg::Error> {
    graph
        .get("in")
        .ok_or(ffmpeg::Error::FilterNotFound)?
        .source()
        .flush()
}

/// Pulls one frame from the sink; `Ok(false)` when it needs more input or is done.
pub(super) fn sink_frame(
    graph: &mut filter::Graph,
    frame: &mut frame::Audio,
) -> Result<bool, ffmpeg::Error> {
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
