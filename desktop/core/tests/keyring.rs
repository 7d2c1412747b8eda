//! The sign-in token in a real Secret Service keyring. Ignored by a plain
//! `cargo test` (it must never touch a developer's own keyring);
//! `scripts/test` runs it with `--ignored` inside a private D-Bus session
//! with a throw-away gnome-keyring.

use std::process::Command;

use desktop_core::credentials::{Account, Credentials};

/// What the user's own keyring tools see for `user`, if anything.
fn secret_tool_lookup(user: &str) -> Option<String> {
    let output = Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "mp3converter-desktop",
            "username",
            user,
        ])
        .output()
        .expect("secret-tool runs (package libsecret-tools)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
#[ignore = "needs a Secret Service: scripts/test runs it under gnome-keyring"]
fn the_token_is_kept_in_the_keyring_and_no_file_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = Account {
        server_url: "http://127.0.0.1:8080".into(),
        email: "keyring@example.com".into(),
    };
    let user = "keyring@example.com @ http://127.0.0.1:8080";
    let credentials = Credentials::new(dir.path());

    credentials.save(&account, "the-token").expect("save");
    assert!(
        !dir.path().join("token").exists(),
        "the token was written to a file although a keyring runs"
    );
    assert_eq!(secret_tool_lookup(user).as_deref(), Some("the-token"));
    // A later start (a new store over the same folder) finds it.
    assert_eq!(
        Credentials::new(dir.path()).load(),
        Some((account.clone(), "the-token".to_owned()))
    );

    credentials.clear_token();
    assert_eq!(secret_tool_lookup(user), None, "signing out left the token");
    assert_eq!(Credentials::new(dir.path()).load(), None);
    assert_eq!(
        credentials.account(),
        Some(account),
        "the email stays for the form"
    );
}
