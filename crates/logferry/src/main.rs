//! The `logferry` command line: `run`, `validate`, `check`, `tail`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use logferry::config::{Config, ConfigErrors};

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
