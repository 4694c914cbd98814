//! The `berth-registry` command: `serve` (the default), and `config check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_registry::config::{Config, Settings};
use berth_registry::{logging, server};
use clap::{Args, Parser, Subcommand};

/// An OCI Distribution registry, a drop-in for CNCF Distribution.
#[derive(Parser)]
#[command(name = "berth-registry", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry (the default command).
    Serve(ServeArgs),
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with REGISTRY_* overrides) without serving.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Configuration file in CNCF Distribution's config.yml format. Without
    /// one: 127.0.0.1:5000, filesystem storage in ./data, deletes enabled.
    #[arg(long, short, env = "REGISTRY_CONFIGURATION_PATH")]
    config: Option<PathBuf>,
    /// The configuration file, as Distribution's `registry serve FILE` takes it.
    #[arg(conflicts_with = "config", value_name = "FILE")]
    file: Option<PathBuf>,
}

fn settings(args: &ServeArgs) -> anyhow::Result<Settings> {
    let env = std::env::vars().filter(|(k, _)| k != "REGISTRY_CONFIGURATION_PATH");
    match args.config.as_ref().or(args.file.as_ref()) {
        Some(path) => Ok(Config::load(path, env)?),
        None => Ok(Config::development().settle()?),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(&args)?;
    logging::init(&settings.config.log);
    server::run(settings, server::shutdown_signal()).await.context("berth-registry")?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Config { command: ConfigCommand::Check { file } }) => {
            Config::load(&file, std::env::vars()).map(|_| println!("{}: ok", file.display())).map_err(Into::into)
        }
        Some(Command::Serve(args)) => run_async(serve(args)),
        None => run_async(serve(cli.serve)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?.block_on(future)
}
