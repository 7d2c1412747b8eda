//! The real binary in `--headless` mode: its command line and its errors.
//! (Its engine is tested in desktop-core; the window in desktop/tests/gui.)

use std::process::Command;

fn app() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mp3converter-desktop"));
    command
        .env_remove("MP3C_EMAIL")
        .env_remove("MP3C_PASSWORD")
        .env_remove("MP3C_SERVER")
        .env_remove("DISPLAY")
        .env("MP3C_NO_KEYRING", "1");
    command
}

#[test]
fn headless_help_lists_every_option() {
    let output = app().args(["--headless", "--help"]).output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--server",
        "--watch",
        "--out",
        "--email",
        "--password",
        "--settle-ms",
        "--existing",
        "--upload-whole-video",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn headless_without_folders_says_what_is_missing() {
    let output = app()
        .args(["--headless", "--email", "a@example.com", "--password", "x"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--watch"), "{stderr}");
}

#[test]
fn headless_with_the_server_down_fails_with_a_clear_error() {
    let dirs = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let output = app()
        .args([
            "--headless",
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .arg("--watch")
        .arg(dirs.path().join("in"))
        .arg("--out")
        .arg(dirs.path().join("out"))
        .arg("--state-dir")
        .arg(dirs.path().join("state"))
        .args(["--email", "a@example.com", "--password", "secret"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the server is unreachable"), "{stderr}");
}

#[test]
fn help_and_version_need_no_display() {
    for flag in ["--help", "--version"] {
        let output = app()
            .env_remove("WAYLAND_DISPLAY")
            .arg(flag)
            .output()
            .expect("runs");
        assert!(output.status.success(), "{flag}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("mp3converter-desktop"), "{flag}: {text}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
    }
    let help = app().arg("--help").output().expect("runs");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--headless"));
}

#[test]
fn the_window_without_a_display_says_so_in_one_line_and_exits_2() {
    let output = app().env_remove("WAYLAND_DISPLAY").output().expect("runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--headless") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
