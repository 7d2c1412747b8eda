//! `cargo bench -p auth-service --bench auth` (or `scripts/bench-auth`):
//! what a login costs and what verifying a token costs, against a real
//! PostgreSQL. Prints numbers; asserts nothing about timing.
//!
//! - Logins per second and p50/p99 latency of `POST /login` at 1, 8 and 32
//!   concurrent clients (each client its own user, keep-alive connections).
//! - Token verification per second: locally with `jsonwebtoken` and the
//!   published JWKS key (the gateway's path) against a `POST /validate`
//!   round trip, and the ratio between them.
//!
//! The server runs in this process, on the same cores as the clients: the
//! figures are for the whole machine doing both sides.
//!
//! Environment: `AUTH_BENCH_POSTGRES_URL` (server URL without a database,
//! default `postgres://postgres@127.0.0.1:5432`), `AUTH_BENCH_SECS` (seconds
//! per measurement, default 5).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use sqlx::Connection as _;

const LEVELS: [usize; 3] = [1, 8, 32];
const PASSWORD: &str = "benchmark password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    if std::env::args().any(|arg| arg == "-h" || arg == "--help") {
        println!(
            "usage: cargo bench -p auth-service --bench auth  (env: AUTH_BENCH_POSTGRES_URL, AUTH_BENCH_SECS)"
        );
        return Ok(());
    }
    let server = std::env::var("AUTH_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let secs: u64 = std::env::var("AUTH_BENCH_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let window = Duration::from_secs(secs.max(1));

    let database = format!("auth_bench_{:016x}", rand::random::<u64>());
    admin_execute(&server, &format!("CREATE DATABASE {database}")).await?;
    let outcome = run(&format!("{server}/{database}"), window).await;
    admin_execute(
        &server,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )
    .await?;
    outcome
}

async fn run(database_url: &str, window: Duration) -> anyhow::Result<()> {
    let key = auth_service::token::generate_ed25519_pem()?;
    let config = auth_service::Config::try_parse_from([
        "auth-service",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--jwt-private-key",
        &key,
    ])?;
    let app = auth_service::App::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(common::testing::cancelled_by(stopped)));
    let max_clients = LEVELS.iter().copied().max().unwrap_or(1);
    for n in 0..max_clients {
        auth_service::add_user(database_url, &email(n), PASSWORD, false).await?;
    }
    let client = reqwest::Client::new();

    println!(
        "auth-service benchmark: PostgreSQL, {} build, server and clients in one process on {} CPUs, {}s per measurement",
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(1, usize::from),
        window.as_secs()
    );
    println!();
    println!("POST /login (argon2id m=19456 KiB, t=2, p=1; EdDSA token)");
    println!("  clients   logins   logins/s   p50 ms   p99 ms");
    for clients in LEVELS {
        let (http, url) = (client.clone(), format!("{base}/login"));
        let (latencies, elapsed) = load(clients, window, move |n| {
            let request = http.post(&url).basic_auth(email(n), Some(PASSWORD));
            async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status() == 200, "login: {}", response.status());
                Ok(())
            }
        })
        .await?;
        println!(
            "  {clients:>7}  {:>7}  {:>9.1}  {:>7.1}  {:>7.1}",
            latencies.len(),
            per_second(latencies.len(), elapsed),
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
        );
    }

    // Token verification.
    let token = client
        .post(format!("{base}/login"))
        .basic_auth(email(0), Some(PASSWORD))
        .send()
        .await?
        .text()
        .await?;
    let jwks: serde_json::Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await?
        .json()
        .await?;
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwks["keys"][0].clone()).context("the JWKS key")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    let local = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, Duration)> {
        let started = Instant::now();
        let mut verified = 0usize;
        while started.elapsed() < window {
            for _ in 0..100 {
                jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)?;
                verified += 1;
            }
        }
        Ok((verified, started.elapsed()))
    })
    .await??;
    let local_rate = per_second(local.0, local.1);

    let token = client
        .post(format!("{base}/login"))
        .basic_auth(email(0), Some(PASSWORD))
        .send()
        .await?
        .text()
        .await?;
    println!();
    println!("Token verification (EdDSA)");
    println!(
        "  {:<52}{local_rate:>9.0}/s  ({:.1} µs each)",
        "local jsonwebtoken::decode, JWKS key, 1 thread:",
        1e6 / local_rate
    );
    let mut one_client_rate = 0.0;
    for clients in [1, 8] {
        let (http, url, token) = (client.clone(), format!("{base}/validate"), token.clone());
        let (latencies, elapsed) = load(clients, window, move |_| {
            let request = http.post(&url).bearer_auth(&token);
            async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status() == 200, "validate: {}", response.status());
                Ok(())
            }
        })
        .await?;
        let rate = per_second(latencies.len(), elapsed);
        if clients == 1 {
            one_client_rate = rate;
        }
        let label = format!(
            "POST /validate round trip, {clients} client{}:",
            if clients == 1 { "" } else { "s" }
        );
        println!(
            "  {label:<52}{rate:>9.0}/s  (p50 {:.2} ms, p99 {:.2} ms)",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
        );
    }
    println!(
        "  {:<52}{:>9.1}x",
        "local / round trip (1 client):",
        local_rate / one_client_rate.max(f64::MIN_POSITIVE)
    );

    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// Runs `clients` concurrent loops of `request(client_number)` until
/// `window` has passed; returns every request's latency and the time taken.
async fn load<F, Fut>(
    clients: usize,
    window: Duration,
    request: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let request = std::sync::Arc::new(request);
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..clients {
        let request = request.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                request(n).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    Ok((all, started.elapsed()))
}

fn email(n: usize) -> String {
    format!("bench{n}@example.com")
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn percentile_ms(latencies: &[Duration], quantile: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

async fn admin_execute(server: &str, statement: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::raw_sql(statement).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
