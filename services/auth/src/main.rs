//! `auth-service`: serves the auth API, or runs a one-off command such as
//! `auth-service user add EMAIL`.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init();
    let mut config = auth_service::Config::parse();
    if let Some(command) = config.command.take() {
        return auth_service::cli::run(command, &config).await;
    }
    auth_service::App::build(config)
        .await?
        .run(common::shutdown::on_signal())
        .await
}
