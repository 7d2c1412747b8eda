//! Email templates (minijinja): built in, each overridable by a file of the
//! same name in a configured folder (`ready.subject`, `ready.txt`,
//! `ready.html`, `failed.subject`, `failed.txt`, `failed.html`). HTML
//! templates auto-escape what they insert.

use std::path::Path;

use minijinja::Environment;

use crate::error::Error;

const BUILT_IN: [(&str, &str); 6] = [
    ("ready.subject", include_str!("../templates/ready.subject")),
    ("ready.txt", include_str!("../templates/ready.txt")),
    ("ready.html", include_str!("../templates/ready.html")),
    (
        "failed.subject",
        include_str!("../templates/failed.subject"),
    ),
    ("failed.txt", include_str!("../templates/failed.txt")),
    ("failed.html", include_str!("../templates/failed.html")),
];

/// The rendered parts of one email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The loaded templates.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads the built-in templates, replacing each with `dir/<name>` when
    /// that file exists. A template that does not compile is a start-up error.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path)
                    .map_err(|err| anyhow::anyhow!("reading template {}: {err}", path.display()))?,
                _ => built_in.to_owned(),
            };
            env.add_template_owned(name, source)?;
        }
        Ok(Self { env })
    }

    /// Renders `<kind>.subject`, `<kind>.txt` and `<kind>.html` with `context`.
    pub fn render(&self, kind: &str, context: minijinja::Value) -> Result<Rendered, Error> {
        let render = |suffix: &str| -> Result<String, Error> {
            Ok(self
                .env
                .get_template(&format!("{kind}.{suffix}"))?
                .render(&context)?)
        };
        Ok(Rendered {
            // A subject is one line, whatever the template's line ends.
            subject: render("subject")?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let templates = Templates::load(None).expect("built-ins compile");
        let rendered = templates
            .render(
                "failed",
                minijinja::context! {
                    filename => "<b>&.mp4",
                    short_filename => "<b>&.mp4",
                    reason => "bad",
                },
            )
            .expect("renders");
        assert_eq!(rendered.subject, "We could not convert <b>&.mp4");
        assert!(rendered.text.contains("\"<b>&.mp4\""));
        assert!(
            rendered.html.contains("&lt;b&gt;&amp;.mp4"),
            "{}",
            rendered.html
        );
    }

    #[test]
    fn a_file_in_the_folder_replaces_the_built_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ready.subject"), "Fertig: {{ filename }}").expect("write");
        let templates = Templates::load(Some(dir.path())).expect("loads");
        let rendered = templates
            .render(
                "ready",
                minijinja::context! { filename => "a.mp4", mp3_fid => "x" },
            )
            .expect("renders");
        assert_eq!(rendered.subject, "Fertig: a.mp4");
        assert!(rendered.text.contains("MP3 id: x"), "built-in body kept");
    }

    #[test]
    fn a_broken_override_is_a_startup_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("failed.txt"), "{% if %}").expect("write");
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
