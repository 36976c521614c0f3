use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Expands FluxConfig resources into Flux objects and reports their compliance.
#[derive(Parser)]
#[command(name = "fluxconfig-controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Flux objects a FluxConfig manifest becomes, as a YAML stream.
    Render {
        /// FluxConfig manifest (YAML; `-` for standard input). Secrets in the same stream supply
        /// protected settings.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Print the FluxConfig CustomResourceDefinition.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render { file } => render(&file),
        Command::Crd => fluxconfig_api::crdgen::fluxconfig_crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn render(file: &std::path::Path) -> Result<(), String> {
    let input = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?
    };
    let yaml = fluxconfig_controller::render::render(&input).map_err(|e| e.to_string())?;
    print!("{yaml}");
    Ok(())
}
