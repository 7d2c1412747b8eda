//! Typed configuration, from flags or environment variables. Every field has
//! a doc comment, so `auth-service --help` documents the deployment.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::BoolishValueParser;

use crate::cli::Command;
use contract::secret::Secret;

/// Users and JSON Web Tokens for the video-to-MP3 service: `POST /login`
/// (HTTP Basic) and `POST /api/v1/login` (JSON) return a JWT, `POST
/// /validate` checks one, `GET /.well-known/jwks.json` publishes the key
/// that verifies them.
///
/// Signing: Ed25519 (EdDSA) with `JWT_PRIVATE_KEY_FILE` or
/// `JWT_PRIVATE_KEY` (create one with `auth-service key generate`); HS256
/// with `JWT_SECRET` for deployments that share a secret with the original
/// system. With neither, a throw-away Ed25519 key is generated (development
/// only: tokens die with the process).
#[derive(Debug, Clone, Parser)]
#[command(name = "auth-service", version)]
pub struct Config {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:5000")]
    pub listen: SocketAddr,

    /// Where users are stored; the scheme picks the backend: `sqlite:`,
    /// `postgres:`/`postgresql:` or `mysql:`/`mariadb:`. Migrations run at
    /// start-up.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://auth.db?mode=rwc",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Secret,

    /// Seconds start-up waits for the database to answer (it may start
    /// after this service on a cluster) before giving up.
    #[arg(long, env = "DATABASE_WAIT_SECS", default_value_t = 60)]
    pub database_wait_secs: u64,

    /// HS256 signing secret, for compatibility with the original deployment
    /// (at least 32 random bytes). When set, tokens are HS256 and the JWKS is
    /// empty; gateways then need the same secret or `POST /validate`.
    #[arg(
        long,
        env = "JWT_SECRET",
        hide_env_values = true,
        conflicts_with_all = ["jwt_private_key_file", "jwt_private_key"]
    )]
    pub jwt_secret: Option<Secret>,

    /// PEM file holding the Ed25519 private key (PKCS#8, `BEGIN PRIVATE
    /// KEY`) that signs tokens, e.g. from `auth-service key generate` or
    /// `openssl genpkey -algorithm ed25519`.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE", conflicts_with = "jwt_private_key")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// The same Ed25519 private key as PEM text, for platforms that inject
    /// secrets as environment variables.
    #[arg(
        long,
        env = "JWT_PRIVATE_KEY",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub jwt_private_key: Option<Secret>,

    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "JWT_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwt_ttl: u64,

    /// Whether `POST /api/v1/register` creates accounts (`false` turns
    /// self-service sign-up off; operators then use `user add`).
    #[arg(
        long,
        env = "ALLOW_REGISTRATION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub allow_registration: bool,

    /// Email of an administrator created at start-up when it does not exist
    /// yet (an existing user is made an administrator; its password is left
    /// alone). Needs `ADMIN_PASSWORD`.
    #[arg(long, env = "ADMIN_EMAIL", requires = "admin_password")]
    pub admin_email: Option<String>,

    /// Password of the `ADMIN_EMAIL` administrator, used only when creating it.
    #[arg(
        long,
        env = "ADMIN_PASSWORD",
        hide_env_values = true,
        requires = "admin_email"
    )]
    pub admin_password: Option<Secret>,

    /// Failed logins allowed per email at one client address within
    /// `RATE_LIMIT_WINDOW_SECS` (then one more per window/N: 429 with
    /// `Retry-After` meanwhile); ten times as many per client address across
    /// emails, and four times as many per email across addresses, neither
    /// applying to a device the account signed in from before.
    #[arg(long, env = "LOGIN_FAILURE_LIMIT", default_value = "5")]
    pub login_failure_limit: NonZeroU32,

    /// Registrations allowed per client address within the window.
    #[arg(long, env = "REGISTRATION_LIMIT", default_value = "10")]
    pub registration_limit: NonZeroU32,

    /// The rate-limit window, in seconds: a client that used its whole
    /// allowance has it back after this long.
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rate_limit_window_secs: u64,

    /// Comma-separated addresses or CIDR ranges of reverse proxies (the
    /// gateways) whose `X-Forwarded-For` names the real client (the gateway
    /// always sends it, built from the peer it sees); from anyone else the
    /// header is ignored. Empty (the default): nobody is believed, and
    /// every client is its TCP peer. A request from a trusted proxy that
    /// names nobody usable is keyed by the proxy's address.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true,
        value_parser = common::client_address::parse_networks
    )]
    pub trusted_proxies: common::client_address::Networks,

    #[command(flatten)]
    pub mail: crate::mail::MailConfig,

    /// A one-off administrative command; without one the service serves HTTP.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Config {
    /// The rate-limit window as a duration.
    pub fn rate_limit_window(&self) -> Duration {
        Duration::from_secs(self.rate_limit_window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::UserCommand;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("auth-service").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_serve_on_port_5000_with_sqlite() {
        // Only flags are given, so the environment of the test runner may
        // still supply values: check the ones flags override.
        let config = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://x.db",
            "--jwt-secret",
            "s3cret",
        ])
        .expect("parses");
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.database_url.expose(), "sqlite://x.db");
        assert_eq!(
            config.jwt_secret.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert!(config.command.is_none());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let config = parse(&[
            "--database-url",
            "postgres://u:pw@db/auth",
            "--jwt-private-key",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKEY\n-----END PRIVATE KEY-----",
            "--admin-email",
            "root@example.com",
            "--admin-password",
            "hunter22",
        ])
        .expect("parses");
        let printed = format!("{config:?}");
        for secret in ["pw@db", "MC4CAQAw", "hunter22"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn a_secret_and_a_private_key_conflict() {
        assert!(parse(&["--jwt-secret", "s", "--jwt-private-key-file", "k.pem"]).is_err());
        assert!(parse(&["--jwt-secret", "s", "--jwt-private-key", "pem"]).is_err());
        assert!(
            parse(&[
                "--jwt-private-key-file",
                "k.pem",
                "--jwt-private-key",
                "pem"
            ])
            .is_err()
        );
    }

    #[test]
    fn the_admin_email_needs_a_password_and_back() {
        assert!(parse(&["--admin-email", "a@b.c"]).is_err());
        assert!(parse(&["--admin-password", "long enough"]).is_err());
        assert!(parse(&["--admin-email", "a@b.c", "--admin-password", "long enough"]).is_ok());
    }

    #[test]
    fn registration_can_be_switched_off() {
        for (value, expected) in [
            ("false", false),
            ("0", false),
            ("no", false),
            ("true", true),
        ] {
            let config = parse(&["--allow-registration", value]).expect("parses");
            assert_eq!(config.allow_registration, expected, "{value}");
        }
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let config = parse(&["--trusted-proxies", "10.0.0.0/8, 192.0.2.7,::1"]).expect("parses");
        let expected: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]
            .iter()
            .map(|n| n.parse().expect("network"))
            .collect();
        assert_eq!(config.trusted_proxies.0, expected);
        assert!(parse(&["--trusted-proxies", "gateway"]).is_err());
        // Empty: nobody is trusted (what a manifest's empty value means).
        let none = parse(&["--trusted-proxies", ""]).expect("parses");
        assert!(none.trusted_proxies.0.is_empty());
    }

    #[test]
    fn user_add_takes_the_database_url_before_or_after_it() {
        for args in [
            vec![
                "--database-url",
                "sqlite://u.db",
                "user",
                "add",
                "a@b.c",
                "--admin",
            ],
            vec![
                "user",
                "add",
                "a@b.c",
                "--admin",
                "--database-url",
                "sqlite://u.db",
            ],
        ] {
            let config = parse(&args).expect("parses");
            assert_eq!(config.database_url.expose(), "sqlite://u.db");
            let Some(Command::User(UserCommand::Add { email, admin })) = config.command else {
                panic!("expected `user add`");
            };
            assert_eq!(email, "a@b.c");
            assert!(admin);
        }
    }

    #[test]
    fn zero_ttls_and_limits_are_refused() {
        assert!(parse(&["--jwt-ttl", "0"]).is_err());
        assert!(parse(&["--login-failure-limit", "0"]).is_err());
        assert!(parse(&["--rate-limit-window-secs", "0"]).is_err());
    }

    #[test]
    fn help_documents_every_variable() {
        let help = <Config as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for variable in [
            "LISTEN_ADDR",
            "DATABASE_URL",
            "JWT_SECRET",
            "JWT_PRIVATE_KEY_FILE",
            "JWT_PRIVATE_KEY",
            "JWT_TTL",
            "ALLOW_REGISTRATION",
            "ADMIN_EMAIL",
            "ADMIN_PASSWORD",
            "LOGIN_FAILURE_LIMIT",
            "REGISTRATION_LIMIT",
            "RATE_LIMIT_WINDOW_SECS",
            "TRUSTED_PROXIES",
        ] {
            assert!(help.contains(variable), "{variable} missing from --help");
        }
    }
}
