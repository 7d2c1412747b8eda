use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init();
    let config = notification::Config::parse();
    notification::App::build(config)
        .await?
        .run(common::shutdown::on_signal())
        .await
}
