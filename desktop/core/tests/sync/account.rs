//! The account as the app handles it: what the sign-in screen asks the
//! server before anyone signs in, and the account controls (confirmation,
//! password change, sign out everywhere, deletion) through the app.

use desktop_core::api::ApiClient;
use desktop_core::app::DesktopApp;
use desktop_core::credentials::Credentials;
use desktop_core::{EngineEvent, Error};

use crate::harness::{STEP, Stack, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_offered_only_where_the_server_accepts_it() {
    let stack = Stack::start().await;

    // The test stack's auth registers (its default).
    let ours = ApiClient::new(&stack.gateway, None).expect("client");
    assert!(ours.registration_open().await.expect("answer"));

    // A server that does not know the route: closed, not an error.
    let elsewhere =
        ApiClient::new(&format!("{}/not-a-gateway", stack.gateway), None).expect("client");
    assert!(!elsewhere.registration_open().await.expect("answer"));

    // Nobody listening: an error (the window shows no link).
    let nobody = ApiClient::new(
        &format!("http://127.0.0.1:{}", common::testing::free_port()),
        None,
    )
    .expect("client");
    assert!(nobody.registration_open().await.is_err());
    stack.stop().await;
}

/// The status `GET /api/v1/jobs` answers `token` with.
async fn jobs_status(stack: &Stack, token: &str) -> u16 {
    http()
        .get(format!("{}/api/v1/jobs", stack.gateway))
        .bearer_auth(token)
        .send()
        .await
        .expect("list jobs")
        .status()
        .as_u16()
}

/// Waits until the gateway refuses `token` (it learns revocations by
/// polling auth, within seconds).
async fn until_refused(stack: &Stack, token: &str) {
    let deadline = std::time::Instant::now() + STEP / 4;
    while jobs_status(stack, token).await != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "the token still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_controls_work_from_the_app() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = Credentials::file_only(dir.path());
    let app = DesktopApp::open(dir.path(), credentials.clone())
        .await
        .expect("open");
    app.sign_in(&stack.gateway, &stack.email, &stack.password)
        .await
        .expect("sign in");

    // Unconfirmed (the test stack mails nothing): said, with the quotas.
    let profile = app.account().await.expect("profile");
    assert_eq!(profile.email, stack.email);
    assert!(!profile.email_confirmed);
    let quotas = profile.quotas.expect("quotas");
    assert!(quotas.jobs_in_flight.limit > 0, "{quotas:?}");
    match app.resend_confirmation().await {
        Err(Error::Server {
            status: 503, code, ..
        }) => assert_eq!(code, "mail_unavailable"),
        other => panic!("resending without mail: {other:?}"),
    }

    // A wrong current password is about the password, not the session.
    match app
        .change_password("not the password", "a new password")
        .await
    {
        Err(Error::Server {
            status: 403,
            code,
            message,
        }) => {
            assert_eq!(code, "wrong_password");
            assert!(message.contains("current password"), "{message}");
        }
        other => panic!("a wrong current password: {other:?}"),
    }
    assert!(app.engine.is_signed_in());
    assert!(matches!(
        app.change_password(&stack.password, "short").await,
        Err(Error::Invalid(_))
    ));

    // Changed: this app goes on with the fresh token, remembered; the
    // others stop.
    let elsewhere = ApiClient::new(&stack.gateway, None)
        .expect("client")
        .login(&stack.email, &stack.password)
        .await
        .expect("login elsewhere")
        .token;
    app.change_password(&stack.password, "a new password")
        .await
        .expect("change");
    assert!(app.engine.is_signed_in());
    let (_, remembered) = credentials.load().expect("remembered");
    assert_ne!(remembered, stack.token);
    until_refused(&stack, &elsewhere).await;
    assert_eq!(jobs_status(&stack, &remembered).await, 200);
    app.account().await.expect("the app's session goes on");

    // Signed out everywhere from another device: the app's next call is
    // refused, and the window is sent back to sign-in.
    let mut events = app.engine.subscribe();
    let phone = ApiClient::new(&stack.gateway, None).expect("client");
    let phone = phone.with_token(Some(
        phone
            .login(&stack.email, "a new password")
            .await
            .expect("phone login")
            .token,
    ));
    phone
        .sign_out_everywhere()
        .await
        .expect("sign out everywhere");
    until_refused(&stack, &remembered).await;
    assert!(matches!(app.account().await, Err(Error::Unauthorized)));
    assert!(!app.engine.is_signed_in());
    let signed_out = tokio::time::timeout(STEP / 4, async {
        loop {
            if let Ok(EngineEvent::SignedOut) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(signed_out.is_ok(), "the window was not told");

    // Signed out everywhere from the app: its own token ends too.
    app.sign_in(&stack.gateway, &stack.email, "a new password")
        .await
        .expect("sign in again");
    let (_, token) = credentials.load().expect("remembered");
    app.sign_out_everywhere()
        .await
        .expect("sign out everywhere");
    assert!(!app.engine.is_signed_in());
    assert!(credentials.load().is_none(), "the token is forgotten");
    until_refused(&stack, &token).await;

    // Deleted: needs the password; then the server and the app forget it.
    app.sign_in(&stack.gateway, &stack.email, "a new password")
        .await
        .expect("sign in again");
    match app.delete_account("not the password").await {
        Err(Error::Server { code, .. }) => assert_eq!(code, "wrong_password"),
        other => panic!("deleting with a wrong password: {other:?}"),
    }
    app.delete_account("a new password").await.expect("delete");
    assert!(!app.engine.is_signed_in());
    assert!(credentials.account().is_none(), "the account is forgotten");
    let login = ApiClient::new(&stack.gateway, None)
        .expect("client")
        .login(&stack.email, "a new password")
        .await;
    assert!(
        matches!(login, Err(Error::Server { status: 401, .. })),
        "{login:?}"
    );
    app.engine.stop().await;
    stack.stop().await;
}
