//! The command line: parse, then hand over to the piece that does the work.

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "healgate",
    version,
    about = "An application gateway that tells the truth about every 502, 503 and 504"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "healgate.toml")]
        config: PathBuf,
    },
    /// Validate a config file: every problem at once, with key path and line.
    Check {
        /// The config file.
        #[arg(short, long, default_value = "healgate.toml")]
        config: PathBuf,
    },
    /// The built-in demo app (faults on demand).
    DemoApp {
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0, env = "PORT")]
        port: u16,
    },
}

/// Parse the command line and run the command. Exit codes: 0 ok, 1 failure or
/// invalid input, 2 usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => match config::load(&config) {
            Ok(checked) => {
                print_warnings(&checked);
                crate::run::run(checked.config)
            }
            Err(invalid) => {
                eprintln!("{invalid}");
                eprintln!("healgate: {} is invalid; not starting", config.display());
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match config::load(&config) {
            Ok(checked) => {
                print_warnings(&checked);
                println!("{}: valid", config.display());
                ExitCode::SUCCESS
            }
            Err(invalid) => {
                eprintln!("{invalid}");
                let n = invalid
                    .problems
                    .iter()
                    .filter(|p| matches!(p.severity, config::Severity::Error))
                    .count();
                eprintln!(
                    "{}: invalid ({n} error{})",
                    config.display(),
                    if n == 1 { "" } else { "s" }
                );
                ExitCode::FAILURE
            }
        },
        Command::DemoApp { port } => crate::demo_app::run(port),
    }
}

fn print_warnings(checked: &config::Checked) {
    for w in &checked.warnings {
        eprintln!("{w}");
    }
}
