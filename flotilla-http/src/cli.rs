//! The `flotilla` command line: `serve` (the default) and a client of a
//! running server (`define`, `run`, `logs`, `history`, `stop`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;
use crate::config::{AuthMode, Config};
use crate::error::{Error, Result};

/// flotilla: define containerized batch jobs and run them on ECS,
/// Kubernetes or local processes.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
pub struct Cli {
    /// Server of the client commands.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_SERVER",
        default_value = "http://127.0.0.1:3000"
    )]
    pub server: String,
    /// Bearer token of the client commands.
    #[arg(long, global = true, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Create a definition from a JSON file (flotilla-os shape).
    Define {
        /// The definition file.
        file: PathBuf,
    },
    /// Execute a definition by alias.
    Run(RunArgs),
    /// Print a run's log.
    Logs {
        /// The run.
        run_id: String,
        /// Keep printing until the run stops.
        #[arg(long, short)]
        follow: bool,
    },
    /// List runs.
    History {
        /// Only runs in these statuses (repeatable).
        #[arg(long)]
        status: Vec<String>,
        /// Only runs of this alias.
        #[arg(long)]
        alias: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Terminate a run.
    Stop {
        /// The run.
        run_id: String,
    },
}

/// `flotilla serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML, or YAML by extension); `FLOTILLA_CONFIG`.
    #[arg(long, env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address (overrides the configuration).
    #[arg(long)]
    pub listen: Option<String>,
    /// Allow a non-loopback address without authentication.
    #[arg(long)]
    pub insecure_listen: bool,
}

/// `flotilla` with no subcommand: `serve` with its arguments from the
/// environment only.
#[derive(Debug, Parser)]
struct BareServe {
    #[command(flatten)]
    serve: ServeArgs,
}

/// `flotilla run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Definition alias.
    pub alias: String,
    /// Environment `K=V` (repeatable).
    #[arg(long, short)]
    pub env: Vec<String>,
    /// Owner (`run_tags.owner_id`); the token's identity wins on servers
    /// with authentication.
    #[arg(long, env = "USER", default_value = "cli")]
    pub owner: String,
    /// Cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Command override.
    #[arg(long)]
    pub command: Option<String>,
    /// Print status changes and the log until the run stops, then exit with
    /// its exit code.
    #[arg(long, short)]
    pub follow: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // FLOTILLA_LOG_FORMAT=json: one JSON object per event (for log shippers).
    let _ = if std::env::var("FLOTILLA_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().try_init()
    } else {
        fmt.try_init()
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a parsed command line; the exit code of `run --follow` is the run's.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let command = match cli.command {
        Some(c) => c,
        // A bare `flotilla` serves, and reads its settings (the
        // `FLOTILLA_CONFIG` file) the way `flotilla serve` does.
        None => Command::Serve(
            BareServe::try_parse_from(["flotilla"])
                .map_err(|e| Error::config(e.to_string()))?
                .serve,
        ),
    };
    let client = || Client::new(&cli.server, cli.token.clone());
    match command {
        Command::Serve(args) => {
            let mut config = Config::load(args.config.as_deref())?;
            if let Some(l) = args.listen {
                config.listen = l;
            }
            if args.insecure_listen {
                config.insecure_listen = true;
            }
            config.validate()?;
            if config.auth == AuthMode::None {
                tracing::info!("authentication is off (auth = \"none\")");
            }
            crate::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Define { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("{}: {e}", file.display())))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| Error::invalid(format!("{}: not JSON: {e}", file.display())))?;
            let def = client()?.define(&body).await?;
            if cli.json {
                println!("{def}");
            } else {
                println!(
                    "defined {} ({})",
                    def["alias"].as_str().unwrap_or("?"),
                    def["definition_id"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_command(&client()?, args, cli.json).await,
        Command::Logs { run_id, follow } => {
            let c = client()?;
            if follow {
                let run = follow_run(&c, &run_id, cli.json, false).await?;
                Ok(exit_code_of(&run))
            } else {
                let page = c.logs(&run_id, None).await?;
                if cli.json {
                    println!(
                        "{}",
                        json!({"log": page.log, "last_seen": page.last_seen, "complete": page.complete})
                    );
                } else {
                    print!("{}", page.log);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::History {
            status,
            alias,
            limit,
        } => {
            let mut q: Vec<(String, String)> = status
                .into_iter()
                .map(|s| ("status".to_string(), s.to_ascii_uppercase()))
                .collect();
            if let Some(a) = alias {
                q.push(("alias".into(), a));
            }
            q.push(("limit".into(), limit.to_string()));
            q.push(("sort_by".into(), "queued_at".into()));
            q.push(("order".into(), "desc".into()));
            let page = client()?.history(&q).await?;
            if cli.json {
                println!("{page}");
            } else {
                println!(
                    "{:<38} {:<24} {:<12} {:>5}  QUEUED AT",
                    "RUN ID", "ALIAS", "STATUS", "EXIT"
                );
                for r in page["history"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<24} {:<12} {:>5}  {}",
                        r["run_id"].as_str().unwrap_or(""),
                        r["alias"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["exit_code"]
                            .as_i64()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r["queued_at"].as_str().unwrap_or("")
                    );
                }
                println!(
                    "{} of {} runs",
                    page["history"].as_array().map_or(0, Vec::len),
                    page["total"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { run_id } => {
            let out = client()?.stop(&run_id).await?;
            if cli.json {
                println!("{out}");
            } else {
                println!(
                    "stopped {run_id} ({})",
                    out["run"]["exit_reason"].as_str().unwrap_or("terminated")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_command(c: &Client, args: RunArgs, json_out: bool) -> Result<ExitCode> {
    let mut env = Vec::new();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Error::invalid(format!("--env: '{kv}' is not K=V")));
        };
        env.push(json!({"name": k, "value": v}));
    }
    let mut body = json!({"env": env, "run_tags": {"owner_id": args.owner}});
    if let Some(cl) = &args.cluster {
        body["cluster"] = json!(cl);
    }
    if let Some(cmd) = &args.command {
        body["command"] = json!(cmd);
    }
    let run = c.execute_alias(&args.alias, &body).await?;
    let run_id = run["run_id"].as_str().unwrap_or("").to_string();
    if !args.follow {
        if json_out {
            println!("{run}");
        } else {
            println!("{run_id}");
            eprintln!(
                "run {run_id} of {} is {}",
                args.alias,
                run["status"].as_str().unwrap_or("?")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow_run(c, &run_id, json_out, true).await?;
    Ok(exit_code_of(&done))
}

fn exit_code_of(run: &Value) -> ExitCode {
    match run["exit_code"].as_i64() {
        Some(code) => ExitCode::from(code.clamp(0, 255) as u8),
        None => ExitCode::from(1),
    }
}

/// Prints status changes (stderr) and the log (stdout, or stderr with
/// `--json`) until the run stops and its log is read; returns the run.
async fn follow_run(c: &Client, run_id: &str, json_out: bool, announce: bool) -> Result<Value> {
    let mut etag: Option<String> = None;
    let mut last_status = String::new();
    let mut cursor: Option<String> = None;
    let mut stopped = false;
    loop {
        if let Some((st, tag)) = c.status(run_id, etag.as_deref()).await? {
            etag = Some(tag);
            let status = st["status"].as_str().unwrap_or("?").to_string();
            if status != last_status {
                if announce || !last_status.is_empty() {
                    let extra = match st["exit_code"].as_i64() {
                        Some(code) if status == "STOPPED" => format!(" (exit code {code})"),
                        _ => String::new(),
                    };
                    eprintln!("[flotilla] run {run_id}: {status}{extra}");
                }
                last_status = status;
            }
            stopped = last_status == "STOPPED";
        }
        let page = c.logs(run_id, cursor.as_deref()).await?;
        if !page.log.is_empty() {
            if json_out {
                eprint!("{}", page.log);
            } else {
                print!("{}", page.log);
                let _ = std::io::stdout().flush();
            }
        }
        if page.last_seen.is_some() {
            cursor = page.last_seen;
        }
        if stopped && (page.complete || page.log.is_empty()) {
            break;
        }
        if page.log.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let run = c.run(run_id).await?;
    if json_out {
        println!("{run}");
    }
    Ok(run)
}
