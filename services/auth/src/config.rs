//! Typed configuration, from flags or environment variables. Every field has
//! a doc comment, so `auth-service --help` documents the deployment.

use std::net::SocketAddr;

use clap::Parser;

use crate::cli::Command;
use crate::secret::Secret;

/// Users and JSON Web Tokens for the video-to-MP3 service: `POST /login`
/// (HTTP Basic) returns a JWT, `POST /validate` checks one.
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

    /// HS256 signing key for tokens. When unset a random key is generated,
    /// and tokens stop being valid when the process restarts.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "JWT_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwt_ttl: u64,

    /// A one-off administrative command; without one the service serves HTTP.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::UserCommand;

    #[test]
    fn defaults_serve_on_port_5000_with_sqlite() {
        // Only flags are given, so the environment of the test runner may
        // still supply values: check the ones flags override.
        let config = Config::try_parse_from([
            "auth-service",
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
        let config = Config::try_parse_from([
            "auth-service",
            "--database-url",
            "postgres://u:pw@db/auth",
            "--jwt-secret",
            "s3cret",
        ])
        .expect("parses");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!printed.contains("pw@db"), "{printed}");
    }

    #[test]
    fn user_add_takes_the_database_url_before_or_after_it() {
        for args in [
            vec![
                "auth-service",
                "--database-url",
                "sqlite://u.db",
                "user",
                "add",
                "a@b.c",
                "--admin",
            ],
            vec![
                "auth-service",
                "user",
                "add",
                "a@b.c",
                "--admin",
                "--database-url",
                "sqlite://u.db",
            ],
        ] {
            let config = Config::try_parse_from(args).expect("parses");
            assert_eq!(config.database_url.expose(), "sqlite://u.db");
            let Some(Command::User(UserCommand::Add { email, admin })) = config.command else {
                panic!("expected `user add`");
            };
            assert_eq!(email, "a@b.c");
            assert!(admin);
        }
    }

    #[test]
    fn a_zero_ttl_is_refused() {
        assert!(Config::try_parse_from(["auth-service", "--jwt-ttl", "0"]).is_err());
    }

    #[test]
    fn help_documents_every_variable() {
        let help = <Config as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        for variable in ["LISTEN_ADDR", "DATABASE_URL", "JWT_SECRET", "JWT_TTL"] {
            assert!(help.contains(variable), "{variable} missing from --help");
        }
    }
}
