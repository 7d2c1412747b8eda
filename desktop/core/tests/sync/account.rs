//! What the sign-in screen asks the server before anyone signs in.

use desktop_core::api::ApiClient;

use crate::harness::Stack;

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
