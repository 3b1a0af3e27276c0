//! The `logferry` command line: `run`, `validate`, `check`, `tail`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use logferry::config::{Config, ConfigErrors};

/// The static build's allocator: mimalloc, set to give memory back as soon as it is free.
///
/// Why: `scripts/build-static.sh` (the binary the image and the release ship) links musl, whose
/// malloc took about twice the CPU of glibc's on the same source (a source's thread allocates
/// what the sink's threads free), so the shipped binary ran at half the benchmarked rate.
/// mimalloc (Microsoft's allocator, kept by its authors and bound by the `mimalloc` crate) with
/// its defaults used less CPU but kept 80+ MiB resident: it commits its arenas eagerly and
/// purges freed memory only after a delay. With the options below it took 20-45% less CPU than
/// musl's malloc for 3-4 MiB more peak RSS on the syslog and journal benches, 10-15 MiB on
/// the container ones (ARCHITECTURE.md, "Performance notes"). glibc builds keep glibc's
/// malloc, which was cheaper there than mimalloc.
#[cfg(target_env = "musl")]
mod allocator {
    use std::ffi::CStr;

    use libmimalloc_sys::{mi_option_set, mi_option_t};

    #[global_allocator]
    static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

    // mimalloc v3's numbers (`mi_option_e` in its mimalloc.h); libmimalloc-sys names none.
    const ARENA_EAGER_COMMIT: mi_option_t = 4;
    const PURGE_DELAY: mi_option_t = 15;
    const GENERIC_COLLECT: mi_option_t = 34;
    const PAGE_FULL_RETAIN: mi_option_t = 36;

    /// Sets the options before `main` and before any Rust allocation: eager commit is read when
    /// the first arena is reserved, at the first allocation. An option given in the
    /// environment (`MIMALLOC_PURGE_DELAY=1000`, ...), mimalloc's own way, is left to mimalloc.
    /// `getenv` allocates nothing. `MIMALLOC_VERBOSE=1` prints the options in effect.
    extern "C" fn configure() {
        for (option, env, value) in [
            (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
            (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 0),
            // Blocks one thread frees in another's pages (the sink frees what sources
            // allocate) are collected every 1,000 allocations rather than 10,000, and no
            // spare page is kept per size class: 51-57 -> 44-47 MiB on the container bench.
            (GENERIC_COLLECT, c"MIMALLOC_GENERIC_COLLECT", 1000),
            (PAGE_FULL_RETAIN, c"MIMALLOC_PAGE_FULL_RETAIN", 0),
        ] {
            let env: &CStr = env;
            // SAFETY: `getenv` reads the environment with a NUL-terminated name; nothing
            // writes the environment this early. `mi_option_set` takes any option number.
            unsafe {
                if libc::getenv(env.as_ptr()).is_null() {
                    mi_option_set(option, value);
                }
            }
        }
    }

    /// Run by the loader's constructors, before `main`.
    #[used]
    #[link_section = ".init_array"]
    static CONFIGURE: extern "C" fn() = configure;
}

#[derive(Parser)]
#[command(
    name = "logferry",
    version,
    about = "Ship logs to AWS CloudWatch Logs without losing a line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format of logferry's own logs (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run until SIGTERM/SIGINT (or until stdin input is delivered), then flush and exit.
    Run {
        /// The config file. Without one, LOGFERRY_LOG_GROUP=NAME ships the host journal to
        /// that group, one stream per instance.
        #[arg(long, short, env = "LOGFERRY_CONFIG")]
        config: Option<PathBuf>,
        /// Serve /metrics, /health and /ready here ("off" to disable).
        #[arg(
            long,
            default_value = "127.0.0.1:9880",
            env = "LOGFERRY_METRICS_ADDRESS"
        )]
        metrics_address: String,
    },
    /// Check that this host can ship: config, data_dir, journal access, region, credentials
    /// (which provider, never the secret), the CloudWatch endpoint and log group.
    Check {
        /// The config file.
        #[arg(long, short, env = "LOGFERRY_CONFIG")]
        config: PathBuf,
        /// Also put one event into a throwaway stream to prove write permission.
        #[arg(long)]
        write: bool,
    },
    /// Print the events that would be shipped, as they would be sent; sends nothing, moves no
    /// cursor.
    Tail {
        /// The config file.
        #[arg(long, short, env = "LOGFERRY_CONFIG")]
        config: PathBuf,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Check a config file; print every problem as FILE:LINE: key: what is wrong.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOGFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Whatever LOGFERRY_LOG says: see `secret::SDK_RESPONSE_BODY_TARGET` (the directive is a
    // constant that a unit test parses, so the error arm is never taken).
    let filter = match logferry::secret::SDK_RESPONSE_BODY_OFF.parse() {
        Ok(off) => filter.add_directive(off),
        Err(_) => filter,
    };
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("logferry: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The loaded config, or exit code 2 once `report` has shown why it did not load.
fn config_or_exit(
    loaded: Result<Config, ConfigErrors>,
    report: impl FnOnce(&ConfigErrors),
) -> Result<Config, ExitCode> {
    loaded.map_err(|errors| {
        report(&errors);
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match logferry::config::load(&config) {
            Ok(loaded) => {
                // Warnings do not fail validation: logferry runs with them too.
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Check { config, write } => {
            let loaded = logferry::config::load(&config);
            let config = match config_or_exit(loaded, |e| println!("FAIL  config:\n{e}")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match tokio_runtime() {
                Ok(rt) => match rt.block_on(logferry::commands::check(&config, write)) {
                    0 => ExitCode::SUCCESS,
                    _ => ExitCode::FAILURE,
                },
                Err(code) => code,
            }
        }
        Command::Tail { config, source } => {
            init_logging(cli.log_format);
            let config = match config_or_exit(logferry::config::load(&config), |e| eprintln!("{e}"))
            {
                Ok(c) => c,
                Err(code) => return code,
            };
            match tokio_runtime() {
                Ok(rt) => match rt.block_on(logferry::commands::tail(&config, source.as_deref())) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("logferry: {e:#}");
                        ExitCode::FAILURE
                    }
                },
                Err(code) => code,
            }
        }
        Command::Run {
            config,
            metrics_address,
        } => {
            let opts = logferry::runtime::RunOptions {
                metrics_address: (!metrics_address.is_empty() && metrics_address != "off")
                    .then_some(metrics_address),
            };
            init_logging(cli.log_format);
            let loaded = match &config {
                Some(path) => logferry::config::load(path),
                None => logferry::config::zero_config(&|n| std::env::var(n).ok()),
            };
            let config = match config_or_exit(loaded, |e| eprintln!("{e}")) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = match tokio_runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(logferry::runtime::run(config, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("logferry: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
