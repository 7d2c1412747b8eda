//! Converts one local file with the converter's own pipeline, for
//! `scripts/bench-converter` (CPU time and peak RSS measured from outside
//! with `/usr/bin/time -v`, exactly as for the `ffmpeg` command line).
//!
//! usage: convert_file INPUT OUTPUT.mp3 [OPTIONS_JSON]

use std::path::PathBuf;

use converter::transcode::{self, Options};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: convert_file INPUT OUTPUT.mp3 [OPTIONS_JSON]");
    };
    let options = match args.next() {
        Some(json) => Options::from_json(&serde_json::from_str(&json)?)?,
        None => Options::default(),
    };
    let (input, output) = (PathBuf::from(input), PathBuf::from(output));
    let title = input
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audio")
        .to_owned();
    transcode::init();
    let report = transcode::convert(&input, &output, &options, &title)?;
    println!(
        "{:.3} s, {} kbps, {} Hz, {} ch, {} bytes{}",
        report.duration_s,
        report.bitrate_kbps,
        report.sample_rate,
        report.channels,
        report.output_bytes,
        if report.copied { ", stream copied" } else { "" }
    );
    Ok(())
}
