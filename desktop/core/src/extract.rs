//! Sending the sound, not the picture: before an upload, the audio tracks
//! of a video are copied out of it (no decoding, no encoding) into an
//! audio-only file, with the source's tags, chapters and cover, so a
//! 360 MB video travels as its 10 MB of sound. The server converts that as
//! it would the video.
//!
//! * **Container.** Matroska audio (`.mka`) carries every codec the server
//!   accepts. An MP4/MOV source is copied into MOV instead: its AAC priming
//!   (the first 1024 samples, trimmed by the source's edit list) has no
//!   place in Matroska as FFmpeg writes it, and the MP3 would start 21 ms
//!   late. MOV keeps the edit list.
//! * **Deterministic.** The muxer runs bit-exact (no random segment UID, no
//!   writing date or library version), so the same video always yields the
//!   same bytes and the server's content deduplication still works.
//! * **Never a lost file.** Anything FFmpeg cannot open, a file without
//!   audio or audio the container refuses is reported as
//!   [`Extracted::Whole`]: the caller uploads the original as before. So
//!   is a file that holds nothing but audio (and a cover): there is
//!   nothing to leave home.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ffmpeg_next as ffmpeg;

use ffmpeg::{Dictionary, Packet, Rational, codec, format, media};

/// What to upload for a video.
#[derive(Debug)]
pub enum Extracted {
    /// Its audio, in `path` (the caller removes it).
    Audio { path: PathBuf, bytes: u64 },
    /// The original itself, for this reason.
    Whole(String),
}

/// Copies the audio of `source` into a file in `dir` named after `stem`.
/// `on_progress` hears 0..1 as the source is read.
pub fn extract_audio(
    source: &Path,
    dir: &Path,
    stem: &str,
    on_progress: &mut dyn FnMut(f64),
) -> Extracted {
    init();
    let Some(source_str) = source.to_str().filter(|s| !s.contains('\0')) else {
        return Extracted::Whole("its path is not valid UTF-8".into());
    };
    let probe = match format::input(source_str) {
        Ok(ictx) => ictx,
        Err(error) => return Extracted::Whole(format!("FFmpeg cannot open it ({error})")),
    };
    if !probe
        .streams()
        .any(|s| s.parameters().medium() == media::Type::Audio)
    {
        return Extracted::Whole("it has no audio track".into());
    }
    // Nothing to leave home: an audio file travels as it is.
    if probe.streams().all(|s| travels(&s)) {
        return Extracted::Whole("it holds only audio already".into());
    }
    let containers: &[(&str, &str)] = if probe.format().name().contains("mp4") {
        &[("mov", "mov"), ("matroska", "mka")]
    } else {
        &[("matroska", "mka")]
    };
    // The first attempt reads on from the probe: one pass over the file.
    let mut opened = Some(probe);
    let mut reasons = Vec::new();
    for (muxer, extension) in containers {
        let path = dir.join(format!("{stem}.{extension}"));
        let ictx = match opened.take().map_or_else(|| format::input(source_str), Ok) {
            Ok(ictx) => ictx,
            Err(error) => return Extracted::Whole(format!("FFmpeg cannot open it ({error})")),
        };
        match copy_audio(ictx, &path, muxer, on_progress) {
            Ok(bytes) => return Extracted::Audio { path, bytes },
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                reasons.push(format!("{muxer}: {error}"));
            }
        }
    }
    Extracted::Whole(format!(
        "its audio could not be copied ({})",
        reasons.join("; ")
    ))
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if ffmpeg::init().is_ok() {
            ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
        }
    });
}

/// The streams that travel: every audio track, and the cover picture or
/// attached files.
fn travels(stream: &format::stream::Stream<'_>) -> bool {
    match stream.parameters().medium() {
        media::Type::Audio | media::Type::Attachment => true,
        media::Type::Video => stream
            .disposition()
            .contains(format::stream::Disposition::ATTACHED_PIC),
        _ => false,
    }
}

/// One pass over the opened source, copying the packets of the streams
/// that travel. Returns the size of the written file.
fn copy_audio(
    mut ictx: format::context::Input,
    output: &Path,
    muxer: &str,
    on_progress: &mut dyn FnMut(f64),
) -> Result<u64, ffmpeg::Error> {
    let mut octx = format::output_as(output, muxer)?;
    // Input stream index -> (output index, input time base).
    let mut mapping: Vec<Option<(usize, Rational)>> = vec![None; ictx.nb_streams() as usize];
    for stream in ictx.streams().filter(travels) {
        let mut out = octx.add_stream(ffmpeg::encoder::find(codec::Id::None))?;
        out.set_parameters(stream.parameters());
        out.set_time_base(stream.time_base());
        out.set_metadata(stream.metadata().to_owned());
        keep_disposition_and_reset_tag(&mut out, stream.disposition());
        mapping[stream.index()] = Some((out.index(), stream.time_base()));
    }
    discard_the_rest(&mut ictx, &mapping);
    for chapter in ictx.chapters() {
        let title = chapter
            .metadata()
            .get("title")
            .unwrap_or_default()
            .to_owned();
        octx.add_chapter(
            chapter.id(),
            chapter.time_base(),
            chapter.start(),
            chapter.end(),
            title,
        )?;
    }
    octx.set_metadata(ictx.metadata().to_owned());
    let mut options = Dictionary::new();
    options.set("fflags", "+bitexact");
    octx.write_header_with(options)?;
    // The muxer picks each stream's time base in `write_header`.
    let out_bases: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();

    let duration_s = (ictx.duration() > 0)
        .then(|| ictx.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
    let mut packets = 0u64;
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(error) => return Err(error),
        }
        let Some(Some((index, time_base))) = mapping.get(packet.stream()).copied() else {
            continue;
        };
        if let (Some(pts), Some(total)) = (packet.pts(), duration_s) {
            let at = pts as f64 * f64::from(time_base.numerator())
                / f64::from(time_base.denominator().max(1));
            on_progress((at / total).clamp(0.0, 1.0));
        }
        packet.rescale_ts(time_base, out_bases[index]);
        packet.set_position(-1);
        packet.set_stream(index);
        packet.write_interleaved(&mut octx)?;
        packets += 1;
    }
    if packets == 0 {
        return Err(ffmpeg::Error::InvalidData);
    }
    octx.write_trailer()?;
    on_progress(1.0);
    drop(octx);
    std::fs::metadata(output)
        .map(|m| m.len())
        .map_err(|_| ffmpeg::Error::InvalidData)
}

/// Copies the source's disposition (the cover stays a cover) and clears
/// the codec tag, which belongs to the source's container (the output's
/// muxer picks its own). ffmpeg-next has no setter for either.
#[allow(unsafe_code)]
fn keep_disposition_and_reset_tag(
    stream: &mut format::stream::StreamMut<'_>,
    disposition: format::stream::Disposition,
) {
    // SAFETY: the stream belongs to the output context, alive and not yet
    // written; both are plain fields read by `write_header`.
    unsafe {
        let raw = stream.as_mut_ptr();
        (*raw).disposition = disposition.bits();
        (*(*raw).codecpar).codec_tag = 0;
    }
}

/// Streams that stay home are not even read where the container lets the
/// demuxer skip them (an indexed MP4 seeks past the picture).
#[allow(unsafe_code)]
fn discard_the_rest(ictx: &mut format::context::Input, mapping: &[Option<(usize, Rational)>]) {
    for (index, kept) in mapping.iter().enumerate() {
        if kept.is_some() {
            continue;
        }
        if let Some(mut stream) = ictx.stream_mut(index) {
            // SAFETY: the stream belongs to `ictx`, alive and not being
            // read; `discard` is a plain field the demuxer consults.
            unsafe {
                (*stream.as_mut_ptr()).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}
