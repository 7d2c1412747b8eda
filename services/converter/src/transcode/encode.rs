//! Decoding the chosen stream and encoding it with libmp3lame: the decoder
//! half ([`Transcoder`]) and, created from the first decoded frame, the
//! encoder half ([`Encoding`]: convert graph, framer graph, encoder, muxer).

use ffmpeg_next as ffmpeg;

use ffmpeg::format::Sample;
use ffmpeg::util::error::EAGAIN;
use ffmpeg::{Dictionary, Packet, Rational, codec, filter, format, frame};

use super::filters::{convert_graph, framer_graph, sink_frame, source_add, source_flush};
use super::limit::Watchdog;
use super::tags::muxer_options;
use super::target::{FF_QP2LAMBDA, SourceFormat, Target, lame};
use super::{
    Options, PartialOutput, Progress, Quality, TranscodeError, decode_error, encode_error,
    ticks_to_seconds,
};

/// The decoding half; creates the encoding half from the first decoded frame.
pub(super) struct Transcoder<'a, 'p, 'c> {
    pub(super) decoder: codec::decoder::Audio,
    /// Reused for every decoded frame.
    pub(super) decoded: frame::Audio,
    /// Packets the demuxer or decoder rejected and we skipped.
    pub(super) bad_packets: u64,
    /// Time base of the audio stream, in which decoded timestamps are expressed.
    pub(super) time_base: Rational,
    /// Timestamp of the stream's first sample, for progress.
    pub(super) origin: Option<i64>,
    pub(super) encoding: Option<Encoding>,
    pub(super) output: &'a str,
    pub(super) options: &'a Options,
    pub(super) tags: Dictionary<'static>,
    pub(super) partial: &'a mut PartialOutput<'p>,
    pub(super) progress: &'a mut Progress<'c>,
    /// Learns how far into the input we are.
    pub(super) watchdog: &'a Watchdog,
}

impl Transcoder<'_, '_, '_> {
    pub(super) fn decode_packet(&mut self, packet: &Packet) -> Result<(), TranscodeError> {
        match self.decoder.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => self.bad_packets += 1,
            Err(error) => return Err(decode_error("decoding", error)),
        }
        self.drain_decoder()
    }

    /// Whether everything up to the end of the trimmed span has been
    /// converted, so the rest of the file need not be read.
    pub(super) fn past_end(&self) -> bool {
        self.encoding.as_ref().is_some_and(Encoding::past_end)
    }

    pub(super) fn drain_decoder(&mut self) -> Result<(), TranscodeError> {
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

    pub(super) fn encode_decoded(&mut self) -> Result<(), TranscodeError> {
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

    pub(super) fn finish(mut self) -> Result<Encoded, TranscodeError> {
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

/// The encoding half: convert graph, framer graph, encoder and muxer.
pub(super) struct Encoding {
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
    /// When the first MP3 packet was written (how soon a job's output starts).
    first_packet: Option<std::time::Instant>,
}

impl Encoding {
    pub(super) fn create(
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
            first_packet: None,
        })
    }

    /// Whether the end of the trimmed span has gone into the framer.
    pub(super) fn past_end(&self) -> bool {
        self.target
            .end_sample
            .is_some_and(|end| self.next_pts >= end)
    }

    /// Feeds one decoded frame through the graphs into the encoder.
    pub(super) fn push(
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
    pub(super) fn flush_convert(&mut self) -> Result<(), TranscodeError> {
        if let Some((graph, _)) = &mut self.convert {
            source_flush(graph)
                .map_err(|error| encode_error("flushing the conversion filter", error))?;
        }
        self.drain_convert()?;
        self.convert = None;
        Ok(())
    }

    pub(super) fn drain_convert(&mut self) -> Result<(), TranscodeError> {
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

    pub(super) fn drain_framer(&mut self) -> Result<(), TranscodeError> {
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

    pub(super) fn drain_encoder(&mut self) -> Result<(), TranscodeError> {
        loop {
            let mut packet = Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|error| encode_error("writing the MP3", error))?;
                    self.first_packet
                        .get_or_insert_with(std::time::Instant::now);
                }
                Err(ffmpeg::Error::Other { errno: EAGAIN }) | Err(ffmpeg::Error::Eof) => {
                    return Ok(());
                }
                Err(error) => return Err(encode_error("encoding", error)),
            }
        }
    }

    /// Flushes every stage and writes the trailer (the Xing/LAME header).
    pub(super) fn finish(mut self) -> Result<Encoded, TranscodeError> {
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
            first_packet: self.first_packet,
        })
    }
}

/// What the encoder was set up with, known once the output is finished.
pub(super) struct Encoded {
    pub(super) sample_rate: u32,
    /// Converted samples before trimming (the source length at the output rate).
    pub(super) samples: u64,
    /// Samples of the trimmed span: what the MP3 must decode to.
    pub(super) span_samples: u64,
    pub(super) first_packet: Option<std::time::Instant>,
}
