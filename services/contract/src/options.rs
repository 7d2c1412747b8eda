//! Per-job conversion options: the `options` object of a job and of its
//! `video` message, parsed and range-checked. It lives here (no FFmpeg types)
//! so the gateway can reject bad options with a 400 before storing anything,
//! and the converter applies exactly the same rules.
//!
//! With serde they read through [`Options::from_json`] (so a value that
//! deserialises is valid) and write their canonical form
//! ([`Options::to_json`]), in a job record, a message or the API alike.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The highest `audio_track` accepted: a file with more audio tracks than
/// this is no recording anyone uploads, and the bound keeps the index in
/// every integer type it passes through (BSON's i64, FFmpeg's i32).
pub const MAX_AUDIO_TRACK: u64 = 255;

/// Options a job cannot be converted with; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OptionsError {
    message: String,
}

impl OptionsError {
    /// The human-readable reason, naming the offending field.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Constant bit rates MP3 allows (kbit/s): MPEG-1 Layer III, and MPEG-2
/// for 22.05 kHz.
const MPEG1_BITRATES: [u32; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
const MPEG2_BITRATES: [u32; 14] = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

/// The rates a job may ask for explicitly.
const SELECTABLE_SAMPLE_RATES: [u32; 3] = [22_050, 44_100, 48_000];

/// The keys [`Options::from_json`] accepts.
const OPTION_KEYS: [&str; 8] = [
    "quality",
    "bitrate_kbps",
    "sample_rate",
    "channels",
    "audio_track",
    "trim_start_s",
    "trim_end_s",
    "normalize",
];

/// Conversion settings.
///
/// `Default` is LAME VBR V2 (`-q:a 2`), FFmpeg's best audio stream, the
/// source sample rate when MP3 allows it (else 44100 Hz), the source channels
/// up to stereo (more are downmixed to stereo), the whole file and no loudness
/// normalisation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    /// How LAME spends bits.
    pub quality: Quality,
    /// Sample rate of the MP3.
    pub sample_rate: SampleRate,
    /// Channels of the MP3.
    pub channels: Channels,
    /// Index among the file's audio streams (0-based); `None` lets FFmpeg pick
    /// the best one, as the CLI does. For uploads with several languages or a
    /// commentary track.
    pub audio_track: Option<usize>,
    /// Seconds of audio skipped at the start (counted from the first audio
    /// sample, not from container timestamps).
    pub trim_start_s: Option<f64>,
    /// Where the converted span ends, in seconds from the first audio sample;
    /// past the end of the audio means "to the end".
    pub trim_end_s: Option<f64>,
    /// EBU R128 loudness normalisation (FFmpeg's `loudnorm`, single pass), so
    /// that quiet lecture recordings and loud music videos play at the same
    /// level.
    pub normalize: bool,
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

/// Sample rate of the MP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleRate {
    /// The source's rate if MP3 can carry it, else 44100 Hz.
    #[default]
    Keep,
    /// 22050, 44100 or 48000 Hz.
    Hz(u32),
}

/// Channels of the MP3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channels {
    /// Mono stays mono, everything else becomes stereo.
    #[default]
    Keep,
    Mono,
    Stereo,
}

impl Options {
    /// Reads the options object of a conversion job.
    ///
    /// `{}` (or `null`) gives the defaults; a key set to `null` is the same as
    /// a missing one. Accepted keys:
    /// * `quality`: `"V0"`..`"V9"`, or `"cbr"` together with
    ///   `bitrate_kbps`: an MP3 bit rate (32, 40, 48, ... 320; at 22050 Hz 8 to 160);
    /// * `sample_rate`: `"keep"`, 22050, 44100 or 48000;
    /// * `channels`: `"keep"`, `"mono"` or `"stereo"`;
    /// * `audio_track`: 0-based index among the file's audio streams;
    /// * `trim_start_s`, `trim_end_s`: non-negative seconds, end after start;
    /// * `normalize`: `true` or `false`.
    ///
    /// Unknown keys and bad values are rejected with a message naming the field.
    pub fn from_json(value: &Value) -> Result<Options, OptionsError> {
        let object = match value {
            Value::Null => return Ok(Options::default()),
            Value::Object(object) => object,
            _ => return Err(invalid("options must be a JSON object")),
        };
        if let Some(unknown) = object
            .keys()
            .find(|key| !OPTION_KEYS.contains(&key.as_str()))
        {
            return Err(invalid(format!(
                "unknown field `{unknown}` (expected one of {})",
                OPTION_KEYS
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }

        let options = Options {
            quality: parse_quality(object)?,
            sample_rate: field(object, "sample_rate")
                .map(parse_sample_rate)
                .transpose()?
                .unwrap_or_default(),
            channels: field(object, "channels")
                .map(parse_channels)
                .transpose()?
                .unwrap_or_default(),
            audio_track: field(object, "audio_track")
                .map(|value| {
                    value
                        .as_u64()
                        .filter(|track| *track <= MAX_AUDIO_TRACK)
                        .and_then(|track| usize::try_from(track).ok())
                        .ok_or_else(|| {
                            invalid(format!(
                                "`audio_track` must be a whole number from 0 to {MAX_AUDIO_TRACK} \
                                 (the index among the file's audio tracks), not {value}"
                            ))
                        })
                })
                .transpose()?,
            trim_start_s: field(object, "trim_start_s")
                .map(|value| parse_seconds("trim_start_s", value))
                .transpose()?,
            trim_end_s: field(object, "trim_end_s")
                .map(|value| parse_seconds("trim_end_s", value))
                .transpose()?,
            normalize: field(object, "normalize")
                .map(|value| {
                    value.as_bool().ok_or_else(|| {
                        invalid(format!("`normalize` must be true or false, not {value}"))
                    })
                })
                .transpose()?
                .unwrap_or(false),
        };
        options.validate()?;
        Ok(options)
    }

    /// Checks ranges, for options built in code rather than parsed.
    pub fn validate(&self) -> Result<(), OptionsError> {
        match self.quality {
            Quality::Vbr(level) if level > 9 => {
                return Err(invalid(format!(
                    "`quality` V{level} is out of range: use V0 to V9"
                )));
            }
            Quality::Cbr(kbps) => {
                // MPEG-1 Layer III (32 kHz and up) and MPEG-2 (22.05 kHz)
                // allow only these; LAME would silently round to one.
                let allowed: &[u32] = match self.sample_rate {
                    SampleRate::Hz(rate) if rate < 32_000 => &MPEG2_BITRATES,
                    _ => &MPEG1_BITRATES,
                };
                if !allowed.contains(&kbps) {
                    let list = allowed.iter().map(u32::to_string).collect::<Vec<_>>();
                    return Err(invalid(format!(
                        "`bitrate_kbps` {kbps} is not an MP3 bit rate{}: use one of {}",
                        match self.sample_rate {
                            SampleRate::Hz(rate) => format!(" at {rate} Hz"),
                            SampleRate::Keep => String::new(),
                        },
                        list.join(", ")
                    )));
                }
            }
            _ => {}
        }
        if let SampleRate::Hz(rate) = self.sample_rate
            && !SELECTABLE_SAMPLE_RATES.contains(&rate)
        {
            return Err(invalid(format!(
                "`sample_rate` {rate} is not allowed: use \"keep\", 22050, 44100 or 48000"
            )));
        }
        for (name, seconds) in [
            ("trim_start_s", self.trim_start_s),
            ("trim_end_s", self.trim_end_s),
        ] {
            if let Some(seconds) = seconds
                && !(seconds.is_finite() && seconds >= 0.0)
            {
                return Err(invalid(format!(
                    "`{name}` must be a non-negative number of seconds, not {seconds}"
                )));
            }
        }
        if let Some(end) = self.trim_end_s {
            let start = self.trim_start_s.unwrap_or(0.0);
            if end <= start {
                return Err(invalid(format!(
                    "`trim_end_s` ({end}) must be greater than `trim_start_s` ({start})"
                )));
            }
        }
        Ok(())
    }

    /// The options in their one canonical JSON form (what a job records and
    /// shows): defaults left out, names as documented (`"V0"`, not `"v0"`),
    /// so equal options are equal documents.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        match self.quality {
            Quality::Vbr(2) => {}
            Quality::Vbr(level) => {
                object.insert("quality".into(), format!("V{level}").into());
            }
            Quality::Cbr(kbps) => {
                object.insert("quality".into(), "cbr".into());
                object.insert("bitrate_kbps".into(), kbps.into());
            }
        }
        if let SampleRate::Hz(rate) = self.sample_rate {
            object.insert("sample_rate".into(), rate.into());
        }
        match self.channels {
            Channels::Keep => {}
            Channels::Mono => {
                object.insert("channels".into(), "mono".into());
            }
            Channels::Stereo => {
                object.insert("channels".into(), "stereo".into());
            }
        }
        if let Some(track) = self.audio_track {
            object.insert("audio_track".into(), track.into());
        }
        for (name, seconds) in [
            ("trim_start_s", self.trim_start_s),
            ("trim_end_s", self.trim_end_s),
        ] {
            if let Some(seconds) = seconds {
                object.insert(name.into(), seconds.into());
            }
        }
        if self.normalize {
            object.insert("normalize".into(), true.into());
        }
        Value::Object(object)
    }

    /// Whether an MP3 source stream can be copied as it is (no decoding,
    /// no re-encoding): nothing asked for needs it. `source_rate`/`source_channels` describe it.
    pub fn allows_copy(&self, source_rate: u32, source_channels: u16) -> bool {
        let rate_ok = match self.sample_rate {
            SampleRate::Keep => true,
            SampleRate::Hz(rate) => rate == source_rate,
        };
        let channels_ok = match self.channels {
            Channels::Keep => true,
            Channels::Mono => source_channels == 1,
            Channels::Stereo => source_channels == 2,
        };
        self.quality == Quality::default()
            && rate_ok
            && channels_ok
            && self.trim_start_s.unwrap_or(0.0) == 0.0
            && self.trim_end_s.is_none()
            && !self.normalize
    }
}

impl Serialize for Options {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Options {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Options::from_json(&value).map_err(serde::de::Error::custom)
    }
}

impl Options {
    /// The JSON Schema (2020-12, as OpenAPI 3.1 uses it) of exactly what
    /// [`Options::from_json`] accepts, cross-field rules included, except
    /// one no JSON Schema can state: `trim_end_s` greater than
    /// `trim_start_s`. Keys may be `null` (the same as missing), names are
    /// case-insensitive as the parser takes them.
    pub fn json_schema() -> Value {
        let bitrate = |rates: &[u32]| serde_json::json!({ "type": "integer", "enum": rates });
        serde_json::json!({
            "description": "Per-job conversion options; every field is optional (null is the same as absent) and anything else is a 400 naming the field. Defaults: LAME VBR V2, the source's sample rate and channels (up to stereo), the best audio track, the whole file, no normalisation. `bitrate_kbps` goes only with `\"quality\": \"cbr\"` and must be an MP3 bit rate (at 22050 Hz the MPEG-2 ones); `trim_end_s` must be greater than `trim_start_s`.",
            "type": ["object", "null"],
            "example": { "quality": "cbr", "bitrate_kbps": 128, "channels": "mono" },
            "additionalProperties": false,
            "properties": {
                "quality": {
                    "description": "`\"V0\"` (best) to `\"V9\"` (smallest) for VBR, or `\"cbr\"` together with `bitrate_kbps`.",
                    "type": ["string", "null"],
                    "pattern": "^([Vv][0-9]|[Cc][Bb][Rr])$"
                },
                "bitrate_kbps": {
                    "description": "Constant bit rate in kbit/s, with `\"quality\": \"cbr\"`.",
                    "type": ["integer", "null"]
                },
                "sample_rate": {
                    "description": "`\"keep\"`, 22050, 44100 or 48000.",
                    "anyOf": [
                        { "type": "null" },
                        { "type": "string", "pattern": "^[Kk][Ee][Ee][Pp]$" },
                        { "type": "integer", "enum": SELECTABLE_SAMPLE_RATES }
                    ]
                },
                "channels": {
                    "description": "`\"keep\"`, `\"mono\"` or `\"stereo\"`.",
                    "type": ["string", "null"],
                    "pattern": "^([Kk][Ee][Ee][Pp]|[Mm][Oo][Nn][Oo]|[Ss][Tt][Ee][Rr][Ee][Oo])$"
                },
                "audio_track": {
                    "description": "Index among the file's audio tracks, from 0; by default FFmpeg's best one.",
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "maximum": MAX_AUDIO_TRACK
                },
                "trim_start_s": {
                    "description": "Seconds skipped at the start.",
                    "type": ["number", "null"],
                    "minimum": 0
                },
                "trim_end_s": {
                    "description": "Where the converted span ends, in seconds from the start of the audio; greater than `trim_start_s`.",
                    "type": ["number", "null"],
                    "exclusiveMinimum": 0
                },
                "normalize": {
                    "description": "EBU R128 loudness normalisation.",
                    "type": ["boolean", "null"]
                }
            },
            "anyOf": [
                { "type": "null" },
                {
                    "title": "VBR",
                    "properties": {
                        "quality": { "type": ["string", "null"], "pattern": "^[Vv][0-9]$" },
                        "bitrate_kbps": { "type": "null" }
                    }
                },
                {
                    "title": "CBR (MPEG-1 rates)",
                    "required": ["quality", "bitrate_kbps"],
                    "properties": {
                        "quality": { "type": "string", "pattern": "^[Cc][Bb][Rr]$" },
                        "bitrate_kbps": bitrate(&MPEG1_BITRATES),
                        "sample_rate": {
                            "anyOf": [
                                { "type": ["null", "string"] },
                                { "type": "integer", "enum": [44_100, 48_000] }
                            ]
                        }
                    }
                },
                {
                    "title": "CBR at 22050 Hz (MPEG-2 rates)",
                    "required": ["quality", "bitrate_kbps", "sample_rate"],
                    "properties": {
                        "quality": { "type": "string", "pattern": "^[Cc][Bb][Rr]$" },
                        "bitrate_kbps": bitrate(&MPEG2_BITRATES),
                        "sample_rate": { "const": 22_050 }
                    }
                }
            ]
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Options {
    /// A stand-in object: the gateway's document puts
    /// [`Options::json_schema`] in its place (utoipa's schema model has no
    /// `not` nor type lists).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .description(Some("See `Options::json_schema`"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Options {
    fn name() -> std::borrow::Cow<'static, str> {
        "ConversionOptions".into()
    }
}

/// A key's value, treating `null` as absent.
fn field<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|value| !value.is_null())
}

fn parse_quality(object: &Map<String, Value>) -> Result<Quality, OptionsError> {
    let bitrate_kbps = field(object, "bitrate_kbps")
        .map(|value| {
            value
                .as_u64()
                .and_then(|kbps| u32::try_from(kbps).ok())
                .ok_or_else(|| invalid("`bitrate_kbps` must be a whole number of kbit/s"))
        })
        .transpose()?;
    let quality = field(object, "quality")
        .map(|value| {
            value
                .as_str()
                .ok_or_else(|| invalid("`quality` must be a string: \"V0\"..\"V9\" or \"cbr\""))
        })
        .transpose()?;

    match (quality, bitrate_kbps) {
        (None, None) => Ok(Quality::default()),
        (Some(quality), bitrate) if quality.eq_ignore_ascii_case("cbr") => {
            let kbps = bitrate
                .ok_or_else(|| invalid("`bitrate_kbps` is required when `quality` is \"cbr\""))?;
            Ok(Quality::Cbr(kbps))
        }
        (Some(quality), None) => Ok(Quality::Vbr(parse_vbr(quality)?)),
        (_, Some(_)) => Err(invalid(
            "`bitrate_kbps` is only allowed together with `\"quality\": \"cbr\"`",
        )),
    }
}

/// Parses `"V0"`..`"V9"` (case-insensitive).
fn parse_vbr(quality: &str) -> Result<u8, OptionsError> {
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

fn parse_sample_rate(value: &Value) -> Result<SampleRate, OptionsError> {
    match value {
        Value::String(keep) if keep.eq_ignore_ascii_case("keep") => Ok(SampleRate::Keep),
        Value::Number(number) => match number.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(rate) if SELECTABLE_SAMPLE_RATES.contains(&rate) => Ok(SampleRate::Hz(rate)),
            _ => Err(invalid(format!(
                "`sample_rate` {number} is not allowed: use \"keep\", 22050, 44100 or 48000"
            ))),
        },
        _ => Err(invalid(format!(
            "`sample_rate` must be \"keep\", 22050, 44100 or 48000, not {value}"
        ))),
    }
}

fn parse_channels(value: &Value) -> Result<Channels, OptionsError> {
    let channels = value.as_str().map(str::to_ascii_lowercase);
    match channels.as_deref() {
        Some("keep") => Ok(Channels::Keep),
        Some("mono") => Ok(Channels::Mono),
        Some("stereo") => Ok(Channels::Stereo),
        _ => Err(invalid(format!(
            "`channels` must be \"keep\", \"mono\" or \"stereo\", not {value}"
        ))),
    }
}

fn parse_seconds(name: &str, value: &Value) -> Result<f64, OptionsError> {
    value
        .as_f64()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .ok_or_else(|| {
            invalid(format!(
                "`{name}` must be a non-negative number of seconds, not {value}"
            ))
        })
}

fn invalid(message: impl Into<String>) -> OptionsError {
    OptionsError {
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_real_mp3_bit_rates_are_taken() {
        let at = |kbps: u32, rate: Option<u32>| {
            let mut value = json!({"quality": "cbr", "bitrate_kbps": kbps});
            if let Some(rate) = rate {
                value["sample_rate"] = rate.into();
            }
            Options::from_json(&value)
        };
        assert!(at(128, None).is_ok());
        assert!(at(320, Some(48_000)).is_ok());
        let odd = at(129, None).expect_err("129 is no MP3 bit rate");
        assert!(odd.message().contains("128, 160"), "{}", odd.message());
        assert!(at(144, Some(22_050)).is_ok());
        assert!(at(320, Some(22_050)).is_err(), "MPEG-2 tops out at 160");
    }

    #[test]
    fn the_canonical_form_is_one_document_per_meaning() {
        let lower = Options::from_json(&json!({"quality": "v0", "channels": "MONO", "sample_rate": "keep", "normalize": false}))
            .expect("valid");
        let upper =
            Options::from_json(&json!({"quality": "V0", "channels": "mono"})).expect("valid");
        assert_eq!(lower.to_json(), upper.to_json());
        assert_eq!(
            upper.to_json(),
            json!({"quality": "V0", "channels": "mono"})
        );
        assert_eq!(Options::default().to_json(), json!({}));
        // It reads back as the same options.
        for options in [lower, Options::from_json(&json!({"quality": "cbr", "bitrate_kbps": 96, "sample_rate": 44100, "audio_track": 1, "trim_start_s": 1.5, "trim_end_s": 9.0, "normalize": true})).expect("valid")] {
            assert_eq!(Options::from_json(&options.to_json()).expect("reads back"), options);
        }
    }

    #[test]
    fn empty_and_null_give_the_defaults() {
        assert_eq!(Options::from_json(&json!({})), Ok(Options::default()));
        assert_eq!(Options::from_json(&Value::Null), Ok(Options::default()));
    }

    #[test]
    fn errors_name_the_field() {
        for (value, field) in [
            (json!({"bogus": 1}), "bogus"),
            (json!({"quality": "V12"}), "quality"),
            (
                json!({"quality": "cbr", "bitrate_kbps": 999}),
                "bitrate_kbps",
            ),
            (json!({"sample_rate": 96000}), "sample_rate"),
            (json!({"channels": 5}), "channels"),
            (json!({"trim_start_s": 3, "trim_end_s": 1}), "trim_end_s"),
        ] {
            let err = Options::from_json(&value).expect_err("invalid");
            assert!(err.message().contains(field), "{value}: {err}");
        }
    }
}
