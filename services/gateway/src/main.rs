use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init();
    let config = gateway::Config::parse();
    gateway::App::build(config)
        .await?
        .run(common::shutdown::on_signal())
        .await
}
