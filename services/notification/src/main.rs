//! `notification`: mails users about their jobs, or runs a one-off command
//! such as `notification replay-dead-letters`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init();
    let mut config = notification::Config::parse();
    if let Some(command) = config.command.take() {
        return notification::run_command(command, &config).await;
    }
    notification::App::build(config)
        .await?
        .run(common::shutdown::on_signal())
        .await
}
