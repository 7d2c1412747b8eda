//! The JSON API under `/api/v1`: jobs create/list/get/delete/retry, the MP3
//! download with ranges, ownership, options validation and deduplication.

use std::path::Path;
use std::time::Duration;

use common::jobs::JobState;
use serde_json::Value;

use crate::helpers::{AuthDb, TestStack, make_video};

const CONVERSION_TIMEOUT: Duration = Duration::from_secs(90);

impl TestStack {
    /// `POST /api/v1/jobs` with `file` and, if given, an `options` part.
    pub(crate) async fn create_job(
        &self,
        token: &str,
        video: &Path,
        options: Option<&str>,
    ) -> reqwest::Response {
        let bytes = std::fs::read(video).expect("read test video");
        let name = video
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut form = reqwest::multipart::Form::new();
        if let Some(options) = options {
            form = form.text("options", options.to_owned());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        self.http
            .post(format!("{}/api/v1/jobs", self.gateway))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("create job request")
    }

    /// `POST /api/v1/jobs` that must answer 202; returns the job.
    pub(crate) async fn created(&self, token: &str, video: &Path, options: Option<&str>) -> Value {
        let response = self.create_job(token, video, options).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["job"].clone()
    }

    async fn api(&self, method: reqwest::Method, token: &str, path: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}/api/v1{path}", self.gateway))
            .bearer_auth(token)
            .send()
            .await
            .expect("api request")
    }

    async fn api_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.api(reqwest::Method::GET, token, path).await
    }

    async fn mp3_range(&self, token: &str, job_id: &str, range: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/jobs/{job_id}/mp3", self.gateway))
            .bearer_auth(token)
            .header("range", range)
            .send()
            .await
            .expect("range request")
    }
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

async fn error_code(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_are_created_listed_fetched_downloaded_and_deleted() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("ann@example.com", "ann-password").await;
    let token = stack.token("ann@example.com", "ann-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let first = make_video(dir.path(), "first.mp4", 4, true);
    let second = make_video(dir.path(), "second.mp4", 2, true);
    let third = make_video(dir.path(), "third.mp4", 3, true);

    // Create, with options.
    let job = stack
        .created(
            &token,
            &first,
            Some(r#"{"quality": "V6", "channels": "mono"}"#),
        )
        .await;
    assert_eq!(job["filename"], "first.mp4");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["options"]["quality"], "V6");
    assert_eq!(job["options"]["channels"], "mono");
    assert!(job["mp3_fid"].is_null());
    assert!(job["size_bytes"].as_i64().expect("size") > 0);
    for key in [
        "id",
        "video_fid",
        "created_at",
        "updated_at",
        "progress",
        "error",
        "duration_s",
    ] {
        assert!(job.get(key).is_some(), "job has {key}: {job}");
    }
    assert!(job["created_at"].as_str().expect("time").contains('T'));
    let first_id = id(&job);
    let second_id = id(&stack.created(&token, &second, None).await);
    let third_id = id(&stack.created(&token, &third, None).await);

    // List newest first, paged.
    let all: Value = stack
        .api_get(&token, "/jobs")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [third_id.as_str(), second_id.as_str(), first_id.as_str()]
    );
    let page1: Value = stack
        .api_get(&token, "/jobs?limit=2")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page1["jobs"].as_array().expect("jobs").len(), 2);
    let next = page1["next_before"]
        .as_str()
        .expect("next_before")
        .to_owned();
    assert_eq!(next, second_id);
    let rest: Value = stack
        .api_get(&token, &format!("/jobs?limit=2&before={next}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["jobs"].as_array().expect("jobs").len(), 1);
    assert_eq!(rest["jobs"][0]["id"], first_id.as_str());
    assert!(rest["next_before"].is_null());
    let page2: Value = stack
        .api_get(&token, "/jobs?limit=2&page=2")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page2["jobs"][0]["id"], first_id.as_str());
    let (status, code, _) = error_code(stack.api_get(&token, "/jobs?limit=999").await).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    // A page past any skip MongoDB can count is empty, not a storage error.
    let far = stack
        .api_get(&token, "/jobs?limit=200&page=9223372036854775808")
        .await;
    assert_eq!(far.status(), 200);
    let far: Value = far.json().await.expect("json");
    assert_eq!(far["jobs"].as_array().map(Vec::len), Some(0), "{far}");

    // Get, once converted.
    stack.wait_for_job(&first_id, CONVERSION_TIMEOUT).await;
    let fetched = stack.api_get(&token, &format!("/jobs/{first_id}")).await;
    assert_eq!(fetched.status(), 200);
    let done: Value = fetched.json().await.expect("json");
    let done = &done["job"];
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"], 1.0);
    let mp3_fid = done["mp3_fid"].as_str().expect("mp3 fid").to_owned();
    let video_fid = done["video_fid"].as_str().expect("video fid").to_owned();
    assert!(done["duration_s"].as_f64().expect("duration") > 3.0);

    // Download: whole file, then ranges.
    let whole = stack
        .api_get(&token, &format!("/jobs/{first_id}/mp3"))
        .await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "audio/mpeg");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let etag = whole.headers()["etag"].to_str().expect("etag").to_owned();
    let length: usize = whole.headers()["content-length"]
        .to_str()
        .expect("len")
        .parse()
        .expect("len");
    let full = whole.bytes().await.expect("mp3");
    assert_eq!(full.len(), length);
    assert!(length > 3000, "MP3 of {length} bytes");
    // The driver writes no md5, so the tag is the file id and length.
    assert_eq!(etag, format!("\"{mp3_fid}-{length}\""));

    let start = stack.mp3_range(&token, &first_id, "bytes=0-99").await;
    assert_eq!(start.status(), 206);
    assert_eq!(
        start.headers()["content-range"],
        format!("bytes 0-99/{length}").as_str()
    );
    assert_eq!(start.headers()["content-length"], "100");
    assert_eq!(start.bytes().await.expect("bytes"), full.slice(0..100));

    let middle = stack.mp3_range(&token, &first_id, "bytes=1000-2999").await;
    assert_eq!(middle.status(), 206);
    assert_eq!(
        middle.headers()["content-range"],
        format!("bytes 1000-2999/{length}").as_str()
    );
    assert_eq!(middle.bytes().await.expect("bytes"), full.slice(1000..3000));

    let suffix = stack.mp3_range(&token, &first_id, "bytes=-500").await;
    assert_eq!(suffix.status(), 206);
    assert_eq!(
        suffix.headers()["content-range"],
        format!("bytes {}-{}/{length}", length - 500, length - 1).as_str()
    );
    assert_eq!(
        suffix.bytes().await.expect("bytes"),
        full.slice(length - 500..)
    );

    let open = stack.mp3_range(&token, &first_id, "bytes=100-").await;
    assert_eq!(open.status(), 206);
    assert_eq!(open.bytes().await.expect("bytes"), full.slice(100..));

    let invalid = stack
        .mp3_range(&token, &first_id, &format!("bytes={length}-"))
        .await;
    assert_eq!(invalid.status(), 416);
    assert_eq!(
        invalid.headers()["content-range"],
        format!("bytes */{length}").as_str()
    );
    assert_eq!(error_code(invalid).await.1, "range_not_satisfiable");

    // The classic route serves ranges too, and keeps its plain-text errors.
    let classic = stack
        .http
        .get(format!("{}/download", stack.gateway))
        .query(&[("fid", mp3_fid.as_str())])
        .bearer_auth(&token)
        .header("range", "bytes=10-19")
        .send()
        .await
        .expect("classic range");
    assert_eq!(classic.status(), 206);
    assert_eq!(classic.headers()["etag"].to_str().expect("etag"), etag);
    assert_eq!(classic.bytes().await.expect("bytes"), full.slice(10..20));
    let classic_416 = stack
        .http
        .get(format!("{}/download", stack.gateway))
        .query(&[("fid", mp3_fid.as_str())])
        .bearer_auth(&token)
        .header("range", "bytes=-0")
        .send()
        .await
        .expect("classic 416");
    assert_eq!(classic_416.status(), 416);
    assert_eq!(
        classic_416.text().await.expect("body"),
        "range not satisfiable"
    );

    // Delete removes the job, its video and its MP3.
    let videos = stack.stored_files(&stack.mongo.videos).await;
    let deleted = stack
        .api(
            reqwest::Method::DELETE,
            &token,
            &format!("/jobs/{first_id}"),
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        stack
            .api_get(&token, &format!("/jobs/{first_id}"))
            .await
            .status(),
        404
    );
    assert_eq!(stack.stored_files(&stack.mongo.videos).await, videos - 1);
    let files = |db: &mongodb::Database, fid: &str| {
        let db = db.clone();
        let fid = mongodb::bson::oid::ObjectId::parse_str(fid).expect("fid");
        async move {
            db.collection::<mongodb::bson::Document>("fs.files")
                .count_documents(mongodb::bson::doc! { "_id": fid })
                .await
                .expect("count")
                + db.collection::<mongodb::bson::Document>("fs.chunks")
                    .count_documents(mongodb::bson::doc! { "files_id": fid })
                    .await
                    .expect("count")
        }
    };
    assert_eq!(
        files(&stack.mongo.videos, &video_fid).await,
        0,
        "video gone"
    );
    assert_eq!(files(&stack.mongo.mp3s, &mp3_fid).await, 0, "MP3 gone");
    let (status, code, _) = error_code(
        stack
            .api(
                reqwest::Method::DELETE,
                &token,
                &format!("/jobs/{first_id}"),
            )
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    stack.wait_for_job(&second_id, CONVERSION_TIMEOUT).await;
    stack.wait_for_job(&third_id, CONVERSION_TIMEOUT).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_users_get_404_and_admins_see_everything() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("alice@example.com", "alice-pass").await;
    stack.add_user("bob@example.com", "bob-pass").await;
    stack.add_admin("root@example.com", "root-pass").await;
    let alice = stack.token("alice@example.com", "alice-pass").await;
    let bob = stack.token("bob@example.com", "bob-pass").await;
    let admin = stack.token("root@example.com", "root-pass").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "a.mp4", 2, true);
    let bob_video = make_video(dir.path(), "b.mp4", 1, true);
    let job_id = id(&stack.created(&alice, &video, None).await);
    let bob_job = id(&stack.created(&bob, &bob_video, None).await);
    let job = stack.wait_for_job(&job_id, CONVERSION_TIMEOUT).await;
    assert_eq!(job.state, JobState::Done);
    let mp3_fid = job.mp3_fid.expect("mp3").to_hex();

    for path in [format!("/jobs/{job_id}"), format!("/jobs/{job_id}/mp3")] {
        let (status, code, _) = error_code(stack.api_get(&bob, &path).await).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    assert_eq!(stack.download(&bob, &mp3_fid).await.status(), 404);
    assert_eq!(
        stack
            .api(reqwest::Method::DELETE, &bob, &format!("/jobs/{job_id}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        stack
            .api(
                reqwest::Method::POST,
                &bob,
                &format!("/jobs/{job_id}/retry")
            )
            .await
            .status(),
        404
    );
    let (status, code, _) = error_code(stack.api_get(&bob, "/jobs/not-an-id").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let bobs: Value = stack
        .api_get(&bob, "/jobs")
        .await
        .json()
        .await
        .expect("json");
    let bob_ids: Vec<&str> = bobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(bob_ids, [bob_job.as_str()]);

    let everyone: Value = stack
        .api_get(&admin, "/jobs")
        .await
        .json()
        .await
        .expect("json");
    let all_ids: Vec<&str> = everyone["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(all_ids, [bob_job.as_str(), job_id.as_str()]);
    assert_eq!(
        stack
            .api_get(&admin, &format!("/jobs/{job_id}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        stack
            .api_get(&admin, &format!("/jobs/{job_id}/mp3"))
            .await
            .status(),
        200
    );
    assert_eq!(stack.download(&admin, &mp3_fid).await.status(), 200);

    let anonymous = stack
        .http
        .get(format!("{}/api/v1/jobs", stack.gateway))
        .send()
        .await
        .expect("request");
    let (status, code, _) = error_code(anonymous).await;
    assert_eq!((status, code.as_str()), (401, "missing_credentials"));
    stack.wait_for_job(&bob_job, CONVERSION_TIMEOUT).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_options_are_refused_and_only_failed_jobs_are_retried() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("dan@example.com", "dan-password").await;
    let token = stack.token("dan@example.com", "dan-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "tone.mp4", 1, true);

    for (options, field) in [
        (r#"{"quality": "V12"}"#, "quality"),
        (r#"{"bogus": 1}"#, "bogus"),
        (r#"{"sample_rate": 96000}"#, "sample_rate"),
        (
            r#"{"quality": "cbr", "bitrate_kbps": 1000}"#,
            "bitrate_kbps",
        ),
        ("{not json", "options"),
    ] {
        let (status, code, message) =
            error_code(stack.create_job(&token, &video, Some(options)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_options"),
            "{options}"
        );
        assert!(message.contains(field), "{options}: {message}");
    }
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "nothing stored"
    );
    let none: Value = stack
        .api_get(&token, "/jobs")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["jobs"].as_array().expect("jobs").len(), 0);

    // A video without audio fails; it may be retried, a done job may not.
    let silent = make_video(dir.path(), "silent.mp4", 1, false);
    let failed_id = id(&stack.created(&token, &silent, None).await);
    let failed = stack.wait_for_job(&failed_id, CONVERSION_TIMEOUT).await;
    assert_eq!(failed.state, JobState::Failed);
    let retried = stack
        .api(
            reqwest::Method::POST,
            &token,
            &format!("/jobs/{failed_id}/retry"),
        )
        .await;
    assert_eq!(retried.status(), 202);
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(retried["job"]["id"], failed_id.as_str());
    // The job is re-read after publishing: the converter may already hold it.
    let state = retried["job"]["state"].as_str().unwrap_or_default();
    assert!(matches!(state, "queued" | "converting"), "{retried}");
    assert!(retried["job"]["error"].is_null());
    // The converter picks the job up again (and fails it again).
    let again = stack.wait_for_job(&failed_id, CONVERSION_TIMEOUT).await;
    assert_eq!(again.state, JobState::Failed);

    let done_id = id(&stack.created(&token, &video, None).await);
    assert_eq!(
        stack.wait_for_job(&done_id, CONVERSION_TIMEOUT).await.state,
        JobState::Done
    );
    let (status, code, _) = error_code(
        stack
            .api(
                reqwest::Method::POST,
                &token,
                &format!("/jobs/{done_id}/retry"),
            )
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_upload_gets_the_same_job_back() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("eve@example.com", "eve-password").await;
    stack.add_user("fay@example.com", "fay-password").await;
    let token = stack.token("eve@example.com", "eve-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "same.mp4", 2, true);

    let first = stack.upload(&token, &[&video]).await;
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("x-deduplicated"));
    let job_id = first.headers()["x-job-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let second = stack.upload(&token, &[&video]).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        second.headers()["x-job-id"].to_str().expect("ascii"),
        job_id
    );
    assert_eq!(second.headers()["x-deduplicated"], "true");
    assert_eq!(second.text().await.expect("body"), "success!");

    // Equivalent options (the defaults spelled out) are the same conversion.
    let json = stack
        .create_job(&token, &video, Some(r#"{"quality": "V2"}"#))
        .await;
    assert_eq!(json.status(), 200);
    let json: Value = json.json().await.expect("json");
    assert_eq!(json["deduplicated"], true);
    assert_eq!(json["job"]["id"], job_id.as_str());
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        1,
        "one video stored"
    );

    // Other options, or another user, are another conversion.
    let other = stack
        .created(&token, &video, Some(r#"{"channels": "mono"}"#))
        .await;
    assert_ne!(id(&other), job_id);
    let fay = stack.token("fay@example.com", "fay-password").await;
    let fays = stack.upload(&fay, &[&video]).await;
    assert_eq!(fays.status(), 200);
    assert_ne!(fays.headers()["x-job-id"].to_str().expect("ascii"), job_id);
    assert!(!fays.headers().contains_key("x-deduplicated"));
    assert_eq!(stack.stored_files(&stack.mongo.videos).await, 3);

    let jobs: Value = stack
        .api_get(&token, "/jobs")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(jobs["jobs"].as_array().expect("jobs").len(), 2);
    for job in [job_id.clone(), id(&other)] {
        stack.wait_for_job(&job, CONVERSION_TIMEOUT).await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audio_only_upload_keeps_what_it_came_from_and_a_bad_source_is_refused() {
    let stack = TestStack::start(AuthDb::Sqlite).await;
    stack.add_user("eve@example.com", "eve-password").await;
    let token = stack.token("eve@example.com", "eve-password").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let video = make_video(dir.path(), "talk.mp4", 1, true);
    let upload = |source: String| {
        let bytes = std::fs::read(&video).expect("read test video");
        let form = reqwest::multipart::Form::new().text("source", source).part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("talk.mp4"),
        );
        stack
            .http
            .post(format!("{}/api/v1/jobs", stack.gateway))
            .bearer_auth(&token)
            .multipart(form)
            .send()
    };

    for bad in [
        r#"{"size_bytes": 10}"#,
        r#"{"size_bytes": -1, "sha256": "00"}"#,
        r#"{"size_bytes": 10, "sha256": "not hex, and not 64 of them"}"#,
        r#"{"size_bytes": 10, "sha256": "aa", "extra": 1}"#,
        "[]",
        "{not json",
    ] {
        let (status, code, message) =
            error_code(upload(bad.to_owned()).await.expect("request")).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{bad}");
        assert!(message.contains("`source`"), "{bad}: {message}");
    }
    assert_eq!(
        stack.stored_files(&stack.mongo.videos).await,
        0,
        "nothing stored"
    );

    let sha = "AB".repeat(32);
    let source = format!(r#"{{"size_bytes": 358000000, "sha256": "{sha}"}}"#);
    let response = upload(source).await.expect("request");
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("json");
    let job = &job["job"];
    assert_eq!(job["source"]["size_bytes"], 358_000_000, "{job}");
    assert_eq!(job["source"]["sha256"], sha.to_lowercase(), "{job}");
    assert_eq!(
        job["size_bytes"],
        std::fs::metadata(&video).expect("size").len(),
        "the bytes that came"
    );
    let again: Value = stack
        .api_get(&token, &format!("/jobs/{}", id(job)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["job"]["source"], job["source"]);
    // A whole upload says nothing of a source.
    let other = make_video(dir.path(), "other.mp4", 2, true);
    let whole = stack.created(&token, &other, None).await;
    assert!(whole.get("source").is_none(), "{whole}");
    stack.stop().await;
}
