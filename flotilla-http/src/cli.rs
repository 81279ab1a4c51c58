//! The `flotilla` command line: `serve` (the default) and a client of a
//! running server (`define`, `definitions`, `run`, `get`, `status`,
//! `events`, `logs`, `history`, `stop`, `clusters`, `template run`), and
//! `artifacts pull|push` against the configured artifact store.

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
    /// Definitions: list, get, update, delete.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// Print a run.
    Get {
        /// The run.
        run_id: String,
    },
    /// Print a run's status (exit code included once it stopped).
    Status {
        /// The run.
        run_id: String,
    },
    /// Print a run's timeline.
    Events {
        /// The run.
        run_id: String,
    },
    /// Print a run's whole log.
    Logs {
        /// The run.
        run_id: String,
        /// Keep printing until the run stops, then exit with its exit code.
        #[arg(long, short)]
        follow: bool,
        /// With `--follow`: give up after this many seconds (exit code 124).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// List the clusters.
    Clusters,
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
    /// Templates (flotilla-os v7).
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Artifacts in the configured store (`[artifacts]`), for a helper
    /// container next to a job: pull its input, push its output.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
}

/// `flotilla template ...`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Execute a template by name with a payload.
    Run(TemplateRunArgs),
}

/// `flotilla template run`.
#[derive(Debug, Args)]
pub struct TemplateRunArgs {
    /// Template name.
    pub name: String,
    /// The payload: a JSON object, inline (`'{"rows": 3}'`) or a file
    /// holding one.
    #[arg(long)]
    pub payload: String,
    /// Version (default: the latest).
    #[arg(long)]
    pub version: Option<u32>,
    /// Owner (`owner_id`); the token's identity wins on servers with
    /// authentication.
    #[arg(long, env = "USER", default_value = "cli")]
    pub owner: String,
    /// Cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print the run that would be made; make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Print status changes and the log until the run stops, then exit with
    /// its exit code.
    #[arg(long, short)]
    pub follow: bool,
    /// With `--follow`: give up after this many seconds (exit code 124; the
    /// run goes on).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// `flotilla artifacts ...`: the store is the configuration's
/// `[artifacts]` (`--config` / `FLOTILLA_CONFIG`, `FLOTILLA_ARTIFACTS__*`);
/// only URLs inside it are reachable.
#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Fetch the zip at URL and unpack it into DIR (checked: no `..`,
    /// absolute paths or links, size, entry and ratio limits).
    Pull {
        /// The zip, inside the configured store.
        url: String,
        /// Where to unpack it (created if absent).
        dir: PathBuf,
        /// Configuration file (TOML, or YAML by extension).
        #[arg(long, env = "FLOTILLA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Zip DIR (files and directories; links are not followed) and upload
    /// it to URL; a missing or empty DIR uploads nothing.
    Push {
        /// What to zip.
        dir: PathBuf,
        /// Where the zip goes, inside the configured store.
        url: String,
        /// Configuration file (TOML, or YAML by extension).
        #[arg(long, env = "FLOTILLA_CONFIG")]
        config: Option<PathBuf>,
        /// Check the store, then wait for SIGTERM before packing and
        /// uploading (tried twice): the upload step of a Kubernetes pod, a
        /// native sidecar the kubelet stops once the job exited. Exits 0
        /// when uploaded (or nothing to upload), non-zero otherwise.
        #[arg(long)]
        on_sigterm: bool,
        /// Write the outcome to FILE (a pod's `terminationMessagePath`):
        /// the URL uploaded, `empty` when there was nothing to upload, or
        /// the error.
        #[arg(long, value_name = "FILE")]
        result_file: Option<PathBuf>,
    },
}

/// `flotilla definitions ...`.
#[derive(Debug, Subcommand)]
pub enum DefinitionsCommand {
    /// List definitions.
    List {
        /// Only this alias (repeatable).
        #[arg(long)]
        alias: Vec<String>,
        /// Only this group (repeatable).
        #[arg(long)]
        group_name: Vec<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Print a definition, by id (or by alias with `--alias`).
    Get {
        /// Definition id, or alias with `--alias`.
        id: String,
        /// `id` is an alias.
        #[arg(long)]
        alias: bool,
    },
    /// Replace the fields given in a JSON file (flotilla-os shape).
    Update {
        /// Definition id.
        id: String,
        /// The JSON file.
        file: PathBuf,
    },
    /// Delete a definition.
    Delete {
        /// Definition id.
        id: String,
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
    /// Memory override (MiB).
    #[arg(long)]
    pub memory: Option<i64>,
    /// CPU override (millicores).
    #[arg(long)]
    pub cpu: Option<i64>,
    /// Idempotence key: running again with it returns the first run.
    #[arg(long)]
    pub idempotence_key: Option<String>,
    /// Label `K=V` (repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Print status changes and the log until the run stops, then exit with
    /// its exit code.
    #[arg(long, short)]
    pub follow: bool,
    /// With `--follow`: give up after this many seconds (exit code 124; the
    /// run goes on).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// The exit code of `--timeout`, as timeout(1).
const TIMED_OUT: u8 = 124;

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
        Command::Artifacts(a) => artifacts_command(a).await,
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
        Command::Template(TemplateCommand::Run(args)) => {
            template_run(&client()?, args, cli.json).await
        }
        Command::Logs {
            run_id,
            follow,
            timeout,
        } => {
            let c = client()?;
            if follow {
                return follow_with_timeout(&c, &run_id, cli.json, false, timeout).await;
            }
            let log = whole_log(&c, &run_id).await?;
            if cli.json {
                println!("{}", json!({"log": log}));
            } else {
                print!("{log}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { run_id } => {
            print_json(&client()?.run(&run_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { run_id } => {
            let c = client()?;
            let Some((st, _)) = c.status(&run_id, None).await? else {
                return Err(Error::invalid("status: the server answered 304 unasked"));
            };
            if cli.json {
                println!("{st}");
            } else {
                let exit = st["exit_code"]
                    .as_i64()
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default();
                println!(
                    "{} {}{exit}, attempt {}",
                    run_id,
                    st["status"].as_str().unwrap_or("?"),
                    st["attempt"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { run_id } => {
            let ev = client()?.events(&run_id).await?;
            if cli.json {
                println!("{ev}");
            } else {
                for e in ev["events"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:>11} → {:<11} attempt {}  {}",
                        e["at"].as_str().unwrap_or(""),
                        e["from"].as_str().unwrap_or("-"),
                        e["to"].as_str().unwrap_or(""),
                        e["attempt"],
                        e["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clusters => {
            let cl = client()?.clusters().await?;
            if cli.json {
                println!("{cl}");
            } else {
                println!("{:<24} {:<8} STATUS", "NAME", "ENGINE");
                for c in cl["cluster_details"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<8} {}",
                        c["name"].as_str().unwrap_or(""),
                        c["engine"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Definitions(d) => definitions_command(&client()?, d, cli.json).await,
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
    if let Some(m) = args.memory {
        body["memory"] = json!(m);
    }
    if let Some(c) = args.cpu {
        body["cpu"] = json!(c);
    }
    if let Some(k) = &args.idempotence_key {
        body["idempotence_key"] = json!(k);
    }
    if !args.label.is_empty() {
        let mut labels = serde_json::Map::new();
        for kv in &args.label {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(Error::invalid(format!("--label: '{kv}' is not K=V")));
            };
            labels.insert(k.to_string(), json!(v));
        }
        body["labels"] = Value::Object(labels);
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
    follow_with_timeout(c, &run_id, json_out, true, args.timeout).await
}

/// `--payload`: inline JSON when it starts with `{`, else a file of JSON;
/// either way an object.
fn read_payload(payload: &str) -> Result<Value> {
    let (text, source) = if payload.trim_start().starts_with('{') {
        (payload.to_string(), "--payload".to_string())
    } else {
        let text = std::fs::read_to_string(payload)
            .map_err(|e| Error::io(format!("--payload: {payload}: {e}")))?;
        (text, format!("--payload: {payload}"))
    };
    match serde_json::from_str(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Error::invalid(format!("{source}: not a JSON object"))),
        Err(e) => Err(Error::invalid(format!("{source}: not JSON: {e}"))),
    }
}

async fn template_run(c: &Client, args: TemplateRunArgs, json_out: bool) -> Result<ExitCode> {
    let mut body = json!({
        "template_payload": read_payload(&args.payload)?,
        "owner_id": args.owner,
        "dry_run": args.dry_run,
    });
    if let Some(cl) = &args.cluster {
        body["cluster"] = json!(cl);
    }
    let run = c.execute_template(&args.name, args.version, &body).await?;
    let run_id = run["run_id"].as_str().unwrap_or("").to_string();
    if args.dry_run || !args.follow {
        if json_out || args.dry_run {
            println!("{run}");
        } else {
            println!("{run_id}");
            eprintln!(
                "run {run_id} of template {} is {}: {}",
                args.name,
                run["status"].as_str().unwrap_or("?"),
                run["command"].as_str().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow_with_timeout(c, &run_id, json_out, true, args.timeout).await
}

async fn definitions_command(
    c: &Client,
    command: DefinitionsCommand,
    json_out: bool,
) -> Result<ExitCode> {
    match command {
        DefinitionsCommand::List {
            alias,
            group_name,
            limit,
        } => {
            let mut q: Vec<(String, String)> = alias
                .into_iter()
                .map(|a| ("alias".to_string(), a))
                .collect();
            q.extend(
                group_name
                    .into_iter()
                    .map(|g| ("group_name".to_string(), g)),
            );
            q.push(("limit".into(), limit.to_string()));
            q.push(("sort_by".into(), "alias".into()));
            q.push(("order".into(), "asc".into()));
            let page = c.definitions(&q).await?;
            if json_out {
                println!("{page}");
            } else {
                println!(
                    "{:<38} {:<24} {:<16} IMAGE",
                    "DEFINITION ID", "ALIAS", "GROUP"
                );
                for d in page["definitions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<24} {:<16} {}",
                        d["definition_id"].as_str().unwrap_or(""),
                        d["alias"].as_str().unwrap_or(""),
                        d["group_name"].as_str().unwrap_or(""),
                        d["image"].as_str().unwrap_or("")
                    );
                }
                println!(
                    "{} of {} definitions",
                    page["definitions"].as_array().map_or(0, Vec::len),
                    page["total"]
                );
            }
        }
        DefinitionsCommand::Get { id, alias } => {
            let def = if alias {
                c.definition_by_alias(&id).await?
            } else {
                c.definition(&id).await?
            };
            print_json(&def);
        }
        DefinitionsCommand::Update { id, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("{}: {e}", file.display())))?;
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| Error::invalid(format!("{}: not JSON: {e}", file.display())))?;
            let def = c.update_definition(&id, &body).await?;
            if json_out {
                println!("{def}");
            } else {
                println!("updated {}", def["alias"].as_str().unwrap_or(&id));
            }
        }
        DefinitionsCommand::Delete { id } => {
            c.delete_definition(&id).await?;
            if json_out {
                println!("{}", json!({"deleted": true}));
            } else {
                println!("deleted {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// The whole log, page after page until the server says it is complete
/// or a page brings nothing new.
async fn whole_log(c: &Client, run_id: &str) -> Result<String> {
    let mut out = String::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = c.logs(run_id, cursor.as_deref()).await?;
        out.push_str(&page.log);
        let advanced = page.last_seen.is_some() && page.last_seen != cursor;
        if page.complete || page.log.is_empty() || !advanced {
            return Ok(out);
        }
        cursor = page.last_seen;
    }
}

/// [`follow_run`], bounded by `timeout` seconds; the run's exit code.
async fn follow_with_timeout(
    c: &Client,
    run_id: &str,
    json_out: bool,
    announce: bool,
    timeout: Option<u64>,
) -> Result<ExitCode> {
    let follow = follow_run(c, run_id, json_out, announce);
    let run = match timeout {
        None => follow.await?,
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), follow).await {
            Ok(run) => run?,
            Err(_) => {
                eprintln!("[flotilla] run {run_id}: still not stopped after {secs} s (--timeout)");
                return Ok(ExitCode::from(TIMED_OUT));
            }
        },
    };
    Ok(exit_code_of(&run))
}

/// The process exit code for a stopped run: its exit code as a shell sees
/// it (modulo 256), never 0 for a run that did not exit 0 (a negative code
/// such as -1 for "killed", or 256, would wrap to success otherwise); 1
/// when there is none.
fn exit_code_of(run: &Value) -> ExitCode {
    ExitCode::from(process_code(run["exit_code"].as_i64()))
}

fn process_code(code: Option<i64>) -> u8 {
    match code {
        Some(0) => 0,
        Some(c) => match c.rem_euclid(256) as u8 {
            0 => 1,
            wrapped => wrapped,
        },
        None => 1,
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

async fn artifacts_command(command: ArtifactsCommand) -> Result<ExitCode> {
    let store = |config: Option<&std::path::Path>| -> Result<flotilla::artifacts::Artifacts> {
        let config = Config::load(config)?;
        config.artifacts.artifacts(&config.data_dir)
    };
    match command {
        ArtifactsCommand::Pull { url, dir, config } => {
            let artifacts = store(config.as_deref())?;
            let n = artifacts.fetch_input(&url, &dir).await?;
            println!(
                "unpacked {} files ({} bytes) into {}",
                n.files,
                n.bytes,
                dir.display()
            );
        }
        ArtifactsCommand::Push {
            dir,
            url,
            config,
            on_sigterm,
            result_file,
        } => {
            let outcome = push(&dir, &url, config.as_deref(), on_sigterm).await;
            if let Some(file) = &result_file {
                let text = match &outcome {
                    Ok(Some(url)) => url.clone(),
                    Ok(None) => "empty".to_string(),
                    Err(e) => e.to_string(),
                };
                if let Err(e) = std::fs::write(file, text) {
                    eprintln!("writing {}: {e}", file.display());
                }
            }
            match outcome? {
                Some(url) => println!("uploaded {url}"),
                None => println!("{} is empty: nothing uploaded", dir.display()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `artifacts push`: the URL uploaded, `None` when `dir` is missing or
/// empty. With `on_sigterm`, the store is checked first and the packing
/// waits for SIGTERM; the upload is tried twice.
async fn push(
    dir: &std::path::Path,
    url: &str,
    config: Option<&std::path::Path>,
    on_sigterm: bool,
) -> Result<Option<String>> {
    let config = Config::load(config)?;
    let artifacts = config.artifacts.artifacts(&config.data_dir)?;
    let attempts = if on_sigterm {
        let store = artifacts.default_store().url();
        if !url.starts_with(&format!("{store}/")) {
            return Err(Error::invalid(format!(
                "url: {url:?} is not inside the configured artifact store ({store})"
            )));
        }
        wait_for_sigterm().await?;
        2
    } else {
        1
    };
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if empty {
        return Ok(None);
    }
    let limits = *artifacts.limits();
    let owned = dir.to_path_buf();
    let zip = tokio::task::spawn_blocking(move || flotilla::artifacts::zip::pack(&owned, &limits))
        .await
        .map_err(|e| Error::io(format!("packing: {e}")))??;
    let mut tried = 0;
    loop {
        tried += 1;
        match artifacts.put_url(url, zip.clone()).await {
            Ok(url) => return Ok(Some(url)),
            Err(e) if tried < attempts => {
                eprintln!("uploading {url} failed ({e}); trying once more");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for SIGTERM (the kubelet stopping a sidecar).
async fn wait_for_sigterm() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::io(format!("listening for SIGTERM: {e}")))?;
        println!("waiting for SIGTERM");
        term.recv().await;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        Err(Error::invalid("--on-sigterm: needs a Unix system"))
    }
}

#[cfg(test)]
mod tests {
    use super::process_code;

    #[test]
    fn a_failed_run_never_exits_zero() {
        assert_eq!(process_code(Some(0)), 0);
        assert_eq!(process_code(Some(7)), 7);
        assert_eq!(process_code(Some(255)), 255);
        assert_eq!(process_code(Some(-1)), 255);
        assert_eq!(process_code(Some(-9)), 247);
        assert_eq!(process_code(Some(256)), 1);
        assert_eq!(process_code(Some(-256)), 1);
        assert_eq!(process_code(None), 1);
    }
}
