//! Putting models in production and serving them: `caption promote`, `caption rollback`,
//! `caption models` (the registry) and `caption serve` (the HTTP service and its API keys).
//! The work lives in the `caption-serve` crate.

use anyhow::{Context, Result, bail};
use caption_serve::registry::{self, Version};
use caption_serve::{ServeConfig, Server, ServerOptions, keys};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PromoteArgs {
    /// A checkpoint directory, or a run directory (its `checkpoints/best` is promoted).
    checkpoint: PathBuf,
    /// The model registry (created if needed).
    #[arg(long)]
    registry: PathBuf,
    /// The model's name in the registry (default: the checkpoint's run name).
    #[arg(long)]
    name: Option<String>,
    /// Promote only if the checkpoint is significantly better than this version (`production`,
    /// or a version id such as `shapes-v3`) on `--on SPLIT`, by `caption compare`'s paired tests.
    #[arg(long, value_name = "VERSION")]
    gate_against: Option<String>,
    /// The split both are evaluated on for the gate.
    #[arg(long, value_name = "SPLIT", default_value = "val", requires = "gate_against")]
    on: String,
    /// The gate's metric.
    #[arg(long, default_value = "CIDEr", requires = "gate_against")]
    gate_metric: String,
    /// The experiment config whose `data:` section locates the split (default: the run's config.yaml).
    #[arg(long, requires = "gate_against")]
    config: Option<PathBuf>,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The model registry.
    #[arg(long)]
    registry: PathBuf,
}

#[derive(Args)]
pub struct ModelsArgs {
    /// The model registry.
    #[arg(long)]
    registry: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    /// The model registry; its production version is served.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Settings (see configs/serve.yaml); defaults without it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides the config's `host`.
    #[arg(long)]
    host: Option<String>,
    /// Overrides the config's `port` (0: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// Overrides the config's `store_file`: the database of jobs and feedback, a file (needed
    /// when the registry is read-only) or a PostgreSQL URL shared by replicas
    /// (postgres://user:password@host:5432/db).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Overrides the config's `redis.url`: the Redis that replicas share for the result cache,
    /// rate limits and job queue (redis://host:6379).
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Subcommand)]
enum ServeCommand {
    /// Manage API keys (only their SHA-256 hashes are stored).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key, store its hash and print the key (shown only this once).
    Add {
        name: String,
        #[arg(long)]
        keys: PathBuf,
    },
    /// Remove a key by name.
    Remove {
        name: String,
        #[arg(long)]
        keys: PathBuf,
    },
    /// List the keys' names and creation times.
    List {
        #[arg(long)]
        keys: PathBuf,
    },
}

pub fn promote(args: PromoteArgs) -> Result<u8> {
    // A run directory holds its checkpoints under checkpoints/.
    let run_best = args.checkpoint.join("checkpoints").join("best");
    let checkpoint = if run_best.is_dir() { run_best } else { args.checkpoint.clone() };
    if let Some(against) = &args.gate_against
        && !passes_gate(&args, &checkpoint, against)?
    {
        return Ok(crate::commands::compare::NOT_BETTER_EXIT);
    }
    let version = registry::promote(&args.registry, &checkpoint, args.name.as_deref())?;
    println!("promoted {} (from {}) to production in {}", version.id, checkpoint.display(), args.registry.display());
    Ok(0)
}

/// Evaluates the candidate and the version it must beat on the same split and compares them.
/// With nothing in production yet there is nothing to beat, and the gate passes.
fn passes_gate(args: &PromoteArgs, checkpoint: &Path, against: &str) -> Result<bool> {
    let baseline = if against == "production" {
        match registry::production(&args.registry).or_else(|e| match e {
            caption_serve::RegistryError::NoRegistry { .. } => Ok(None),
            e => Err(e),
        })? {
            Some(version) => version,
            None => {
                println!("gate: nothing in production yet, so nothing to beat");
                return Ok(true);
            }
        }
    } else {
        registry::list(&args.registry)?
            .into_iter()
            .find(|v| v.id == against)
            .with_context(|| format!("--gate-against {against}: no such version in {} (see `caption models`)", args.registry.display()))?
    };
    let gates = args.registry.join("gates").join(format!(
        "{}-{}",
        baseline.id,
        caption_data::time::compact_timestamp(std::time::SystemTime::now())
    ));
    let mut evaluations = Vec::new();
    for (label, dir) in [("baseline", baseline.dir(&args.registry)), ("candidate", checkpoint.to_path_buf())] {
        let out = gates.join(label);
        println!("gate: evaluating the {label} ({}) on the {} split", dir.display(), args.on);
        crate::commands::eval::run(crate::commands::eval::EvalArgs {
            checkpoint: dir,
            split: args.on.clone(),
            config: args.config.clone().or_else(|| run_config_of(checkpoint)),
            overrides: Vec::new(),
            beam_size: None,
            max_images: 0,
            meteor_data: None,
            out: Some(out.clone()),
            device: None,
            // The gate scores the captions production would serve: from the images.
            feature_cache: false,
        })?;
        evaluations.push(out);
    }
    let passed = crate::commands::compare::gate(&evaluations[0], &evaluations[1], &args.gate_metric, &gates)?;
    if passed {
        println!("gate: passed, the candidate is significantly better than {} on {} ({})", baseline.id, args.gate_metric, gates.display());
    } else {
        println!(
            "gate: not promoted, the candidate is not significantly better than {} on {} (see {})",
            baseline.id,
            args.gate_metric,
            gates.join("compare.md").display()
        );
    }
    Ok(passed)
}

/// `<run>/config.yaml` for a checkpoint at `<run>/checkpoints/<name>`.
fn run_config_of(checkpoint: &Path) -> Option<PathBuf> {
    let config = checkpoint.parent()?.parent()?.join("config.yaml");
    config.is_file().then_some(config)
}

pub fn rollback(args: RollbackArgs) -> Result<()> {
    let version = registry::rollback(&args.registry)?;
    println!("production is now {} in {}", version.id, args.registry.display());
    Ok(())
}

pub fn models(args: ModelsArgs) -> Result<()> {
    let versions = registry::list(&args.registry)?;
    let production = registry::production(&args.registry)?.map(|v| v.id);
    if args.json {
        let listing = serde_json::json!({"production": production, "versions": versions});
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    if versions.is_empty() {
        println!(
            "no versions in {}: promote one with `caption promote CHECKPOINT --registry {}`",
            args.registry.display(),
            args.registry.display()
        );
        return Ok(());
    }
    print!("{}", table(&versions, production.as_deref()));
    Ok(())
}

/// One line per version; `*` marks production.
fn table(versions: &[Version], production: Option<&str>) -> String {
    let id_width = versions.iter().map(|v| v.id.len()).max().unwrap_or(0).max("VERSION".len());
    let by_width = versions.iter().map(|v| v.promoted_by.len()).max().unwrap_or(0).max("BY".len());
    let mut out = format!("  {:id_width$}  {:20}  {:by_width$}  {:>8}  METRICS\n", "VERSION", "PROMOTED", "BY", "STEP");
    for v in versions {
        let marker = if production == Some(v.id.as_str()) { '*' } else { ' ' };
        let metrics: Vec<String> = v.metrics.iter().map(|(name, value)| format!("{name}={value:.4}")).collect();
        out.push_str(&format!(
            "{marker} {:id_width$}  {:20}  {:by_width$}  {:>8}  {}\n",
            v.id,
            v.promoted_at,
            v.promoted_by,
            v.step,
            metrics.join(" ")
        ));
    }
    out
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if let Some(ServeCommand::Keys(command)) = args.command {
        return run_keys(command);
    }
    let Some(registry_dir) = args.registry else {
        bail!("`caption serve` needs --registry DIR (the directory `caption promote` writes)");
    };
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(host) = args.host {
        config.host = host;
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    if let Some(store) = args.store {
        config.store_file = Some(store);
    }
    if let Some(redis) = args.redis {
        config.redis.url = Some(redis);
    }
    let auth = config.auth;
    let device = config.device.clone();
    let reload_ms = config.reload_interval_ms;
    let server = Server::start(ServerOptions { registry: registry_dir.clone(), config })?;
    match server.model() {
        Some(version) => eprintln!("caption serve: serving {} from {} on {device}", version.id, registry_dir.display()),
        None if reload_ms > 0 => eprintln!(
            "warning: {} has no production version: /ready and /api/v1/caption answer 503 until one is promoted (checked every {reload_ms} ms)",
            registry_dir.display()
        ),
        None => eprintln!(
            "warning: {} has no production version: /ready and /api/v1/caption answer 503 until one is promoted and the server restarted",
            registry_dir.display()
        ),
    }
    eprintln!(
        "caption serve: auth {}; listening on http://{} (Ctrl-C stops)",
        if auth == caption_serve::AuthMode::Enabled { "enabled" } else { "disabled" },
        server.address()
    );
    std::io::stderr().flush().ok();
    server.run_until_signal().context("waiting for a stop signal")?;
    eprintln!("caption serve: stopped");
    Ok(())
}

fn run_keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Add { name, keys: path } => {
            let key = keys::add_key(&path, &name)?;
            eprintln!("added key {name:?} to {}; it is shown only now, store it safely:", path.display());
            println!("{key}");
        }
        KeysCommand::Remove { name, keys: path } => {
            keys::remove_key(&path, &name)?;
            println!("removed key {name:?} from {}", path.display());
        }
        KeysCommand::List { keys: path } => {
            for record in keys::list_keys(&path)? {
                println!("{}\t{}", record.name, record.created);
            }
        }
    }
    Ok(())
}
