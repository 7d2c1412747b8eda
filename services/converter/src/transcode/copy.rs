//! The fast path: an MP3 source stream copied into the MP3 muxer as it is
//! (no decoding, no generation loss).

use ffmpeg_next as ffmpeg;

use ffmpeg::{codec, format};

use super::limit::Watchdog;
use super::tags::muxer_options;
use super::{
    Chosen, PartialOutput, Progress, TranscodeError, Written, encode_error, for_each_packet,
    ticks_to_seconds,
};

/// The fast path: copies the MP3 packets of the chosen stream into the MP3
/// muxer as they are.
pub(super) fn remux(
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
    let mut first_packet = None;
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
        first_packet.get_or_insert_with(std::time::Instant::now);
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
        first_packet,
    })
}
