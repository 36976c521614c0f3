use clap::Parser;

/// Pulls desired flux configurations from the Azure data plane and reports compliance.
#[derive(Parser)]
#[command(name = "fluxconfig-agent", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("{}", fluxconfig_agent::version());
}
