//! The `berth-registry` command: `serve` (the default), `gc`, `config check`,
//! `prepare-storage` and `containerd-hosts`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

use berth_registry::config::{CONFIGURATION_PATH_ENV, Config, Settings};
use berth_registry::gc::GcOptions;
use berth_registry::metrics::Metrics;
use berth_registry::proxy::collect::collect_with_caches;
use berth_registry::server::Prepared;
use berth_registry::storage::ownership;
use berth_registry::{containerd_hosts, logging, server};
use clap::{Args, Parser, Subcommand};

/// An OCI Distribution registry, a drop-in for CNCF Distribution.
#[derive(Parser)]
#[command(
    name = "berth-registry",
    version,
    args_conflicts_with_subcommands = true
)]
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
    /// Collect garbage: delete unreferenced blobs (and, with
    /// --delete-untagged, untagged manifests) while the registry keeps serving.
    Gc(GcArgs),
    /// Give filesystem storage to the user the registry runs as: create
    /// DIR if missing and make UID:GID the owner of it and everything below
    /// it (once: an owned DIR is left alone). Run as root with only
    /// CAP_CHOWN, before the registry starts on a hostPath volume.
    PrepareStorage {
        /// The new owner, as UID:GID.
        #[arg(long, value_parser = ownership::parse_owner)]
        owner: (u32, u32),
        /// The storage root directory.
        dir: PathBuf,
    },
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Point the node's containerd at this node's registry: write (or take
    /// back) hosts.toml files in containerd's registry hosts directory.
    ContainerdHosts {
        #[command(subcommand)]
        command: HostsCommand,
    },
}

#[derive(Subcommand)]
enum HostsCommand {
    /// Write DIR/<HOST>/hosts.toml for every --mirror and --own-name, pointing
    /// at --endpoint; keep other tools' files; remove what --owner wrote
    /// earlier for hosts no longer named.
    Apply {
        /// containerd's hosts directory (its registry config_path).
        #[arg(long, value_name = "DIR")]
        hosts_dir: PathBuf,
        /// This node's registry, e.g. http://10.0.0.5:5000.
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// Who writes (a Registry's NAMESPACE/NAME); recorded in each file.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        owner: String,
        /// A registry host pulled through the endpoint (or _default), and the
        /// upstream containerd falls back to (default: containerd's for HOST).
        #[arg(long = "mirror", value_name = "HOST[=SERVER_URL]")]
        mirrors: Vec<String>,
        /// The name pods use for images pushed to this registry; its server
        /// is the endpoint itself.
        #[arg(long, value_name = "NAME")]
        own_name: Option<String>,
    },
    /// Take back everything --owner wrote: its files go, kept originals come
    /// back, directories it created are removed.
    Remove {
        /// containerd's hosts directory (its registry config_path).
        #[arg(long, value_name = "DIR")]
        hosts_dir: PathBuf,
        /// Whose files to take back (a Registry's NAMESPACE/NAME).
        #[arg(long, value_name = "NAMESPACE/NAME")]
        owner: String,
        /// After removing, keep running until SIGTERM.
        #[arg(long)]
        hold: bool,
    },
}

#[derive(Args)]
struct GcArgs {
    /// The registry's configuration file (the same one `serve` reads).
    /// Without one: the development settings, filesystem storage in ./data.
    #[arg(long, short, env = CONFIGURATION_PATH_ENV)]
    config: Option<PathBuf>,
    /// Report what would be deleted without deleting anything.
    #[arg(long)]
    dry_run: bool,
    /// Also delete manifests that no tag reaches, and what only they reference.
    #[arg(long)]
    delete_untagged: bool,
    /// Spare content touched within this period (default: berth.gcgraceperiod, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    grace_period: Option<Duration>,
    /// Purge upload sessions started longer ago than this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    upload_ttl: Duration,
}

/// Where Kubernetes reads a terminated container's message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with REGISTRY_* overrides) as `serve`
    /// does, loading the TLS and htpasswd files it names, without serving.
    Check {
        /// The configuration file.
        #[arg(env = CONFIGURATION_PATH_ENV)]
        file: PathBuf,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Configuration file in CNCF Distribution's config.yml format. Without
    /// one: 127.0.0.1:5000, filesystem storage in ./data, deletes enabled.
    #[arg(long, short, env = CONFIGURATION_PATH_ENV)]
    config: Option<PathBuf>,
    /// The configuration file, as Distribution's `registry serve FILE` takes it.
    #[arg(conflicts_with = "config", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The settings of `file` (with `REGISTRY_*` overrides), or the development
/// settings when no file is given.
fn settings(file: Option<&PathBuf>) -> anyhow::Result<Settings> {
    match file {
        Some(path) => Ok(Config::load(path, std::env::vars())?),
        None => Ok(Config::development(std::env::vars())?),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(args.config.as_ref().or(args.file.as_ref()))?;
    logging::init(&settings.log);
    server::run(Prepared::new(settings)?, server::shutdown_signal())
        .await
        .context("berth-registry")?;
    Ok(())
}

/// `config check`: everything `serve` checks before it binds its addresses.
fn check(file: &PathBuf) -> anyhow::Result<()> {
    let settings = settings(Some(file))?;
    logging::init(&settings.log);
    Prepared::new(settings)?;
    println!("{}: ok", file.display());
    Ok(())
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let settings = settings(args.config.as_ref())?;
    logging::init(&settings.log);
    let configured = settings.gc_grace_period;
    let grace_period = args.grace_period.unwrap_or(configured);
    // Servers refresh touches every quarter of the configured period; a
    // shorter collection grace could outrun a touch that is still current.
    if grace_period < configured / 2 {
        anyhow::bail!(
            "--grace-period {} is shorter than half of berth.gcgraceperiod ({}), whose quarter is how often servers refresh touches",
            humantime::format_duration(grace_period),
            humantime::format_duration(configured)
        );
    }
    let options = GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
        grace_period,
        upload_ttl: args.upload_ttl,
    };
    let registry = server::registry(&settings, Arc::new(Metrics::new())).await;
    let report = collect_with_caches(&registry, &options, settings.pull_through.ttl).await?;
    let json = serde_json::to_string(&report)?;
    println!("{json}");
    write_termination_log(&json);
    Ok(())
}

/// Writes `text` to [`TERMINATION_LOG`] when it is writable: Kubernetes
/// shows it as the container's termination message.
fn write_termination_log(text: &str) {
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .write(true)
        .open(TERMINATION_LOG)
    {
        let _ = std::io::Write::write_all(&mut log, text.as_bytes());
    }
}

/// `containerd-hosts apply|remove`; a failure is also the termination message.
fn containerd_hosts(command: HostsCommand) -> anyhow::Result<()> {
    let hold = matches!(command, HostsCommand::Remove { hold: true, .. });
    let changes = match command {
        HostsCommand::Apply {
            hosts_dir,
            endpoint,
            owner,
            mirrors,
            own_name,
        } => (|| {
            containerd_hosts::apply(&containerd_hosts::ApplyRequest {
                hosts_dir,
                endpoint: endpoint.parse()?,
                owner: owner.parse()?,
                mirrors: mirrors
                    .iter()
                    .map(|m| m.parse())
                    .collect::<Result<_, _>>()?,
                own_name: own_name.map(|n| n.parse()).transpose()?,
            })
        })(),
        HostsCommand::Remove {
            hosts_dir, owner, ..
        } => owner
            .parse()
            .and_then(|owner| containerd_hosts::remove(&hosts_dir, &owner)),
    };
    let changes = changes.inspect_err(|e| write_termination_log(&e.to_string()))?;
    for change in &changes {
        println!("{change}");
    }
    if hold {
        run_async(async {
            // Listening before saying so: a SIGTERM after the message is never lost.
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?;
            println!("removed; holding until SIGTERM");
            terminate.recv().await;
            Ok(())
        })?;
    }
    Ok(())
}

fn prepare_storage(dir: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    let handover = ownership::give_to(dir, uid, gid)?;
    println!(
        "{}: owned by {uid}:{gid}{}{}",
        dir.display(),
        if handover.created { ", created" } else { "" },
        match handover.changed {
            0 => String::new(),
            n => format!(", {n} entries handed over"),
        }
    );
    Ok(())
}

/// Caps glibc's malloc arenas. glibc gives each thread that allocates while
/// another holds the arena a new one, up to eight per core, and keeps what
/// each arena once held: with file work spread over the blocking pool's
/// threads that was most of the server's resident memory, for no speed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const ARENAS: libc::c_int = 2;
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Raises the soft limit on open files to the hard one, as Go programs (CNCF
/// Distribution among them) do at start: every connection is an open file,
/// and a soft limit of 1024, common by default, is about
/// `berth.maxconnections`'s default alone.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_file_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Config {
            command: ConfigCommand::Check { file },
        }) => check(&file),
        Some(Command::PrepareStorage {
            owner: (uid, gid),
            dir,
        }) => prepare_storage(&dir, uid, gid),
        Some(Command::ContainerdHosts { command }) => containerd_hosts(command),
        Some(Command::Serve(args)) => run_async(serve(args)),
        Some(Command::Gc(args)) => run_async(gc(args)),
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

/// Threads for blocking file work. Each filesystem operation is one short
/// trip to this pool; tokio's default of 512 lets a burst of small reads
/// spawn hundreds of threads whose stacks and malloc arenas stay resident,
/// without reading any faster on a machine with a few cores.
const MAX_BLOCKING_THREADS: usize = 32;

fn run_async(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(future)
}
