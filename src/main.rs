//! The `strongbox` binary: parses flags and hands off to `server::start`
//! (`serve`) or to the client commands in `cli`.

use std::process::ExitCode;

use strongbox::cli::{self, AuditCmd, Command};
use strongbox::config::ServerConfig;
use strongbox::server;

fn main() -> ExitCode {
    let cli = cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Audit(AuditCmd::AcceptLoss(args)) => accept_loss(*args, cli.json).await,
            Command::Restore(args) => restore(*args, cli.json).await,
            Command::Completions { shell } => completions(shell),
            _ => cli::run_client(cli).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: cli::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        cli::LogFormat::Text => fmt.init(),
        // One JSON object a line: timestamp, level, target, the message
        // and the event's fields at the top level.
        cli::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let cfg = server_config(args)?;
    init_logging(cfg.log_format);
    let format = cfg.log_format;
    let grace = cfg.shutdown_grace;
    let running = server::start(cfg).await?;
    // Scripts and tests read the bound address (the real port for :0) here;
    // in JSON mode this line is a JSON object too, with the address in `addr`.
    match format {
        cli::LogFormat::Text => println!("listening on {}", running.addr),
        cli::LogFormat::Json => println!(
            "{}",
            serde_json::json!({
                "timestamp": strongbox::vault::fmt_time(strongbox::now_ms()),
                "level": "INFO",
                "target": "strongbox",
                "message": format!("listening on {}", running.addr),
                "addr": running.addr.to_string(),
            })
        ),
    }
    shutdown_signal().await;
    tracing::info!(
        grace = ?grace,
        "shutting down: new calls are refused (UNAVAILABLE), calls in flight finish, the writer drains"
    );
    match tokio::time::timeout(grace, running.shutdown()).await {
        Ok(done) => done?,
        // Every acknowledged write is already committed: what is cut here
        // was never acknowledged.
        Err(_) => tracing::warn!(
            grace = ?grace,
            "calls still in flight after shutdown_grace; exiting without them"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn accept_loss(args: cli::AcceptLossArgs, json: bool) -> anyhow::Result<()> {
    let cfg = server_config(args.server)?;
    init_logging(cfg.log_format);
    let done = server::accept_audit_loss(&cfg, args.reason).await?;
    if json {
        let lanes: Vec<_> = done
            .lanes
            .iter()
            .map(|l| {
                serde_json::json!({
                    "lane": l.lane,
                    "kept_through": l.kept_through,
                    "lost_through": l.lost_through,
                    "quarantined": l.quarantined,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "kept_through": done.kept_through,
                "quarantined": done.quarantined,
                "head_seq": done.head_seq,
                "lanes": lanes,
            })
        );
    } else {
        println!(
            "audit chain break accepted: entries through {} kept, {} quarantined (table audit_quarantine); the acknowledgement is entry {}",
            done.kept_through, done.quarantined, done.head_seq
        );
        for l in &done.lanes {
            println!(
                "  lane {}: kept through entry {}, lost through {}, {} quarantined",
                l.lane, l.kept_through, l.lost_through, l.quarantined
            );
        }
    }
    Ok(())
}

async fn restore(args: cli::RestoreArgs, json: bool) -> anyhow::Result<()> {
    use server::restore::Ledger;
    let ledger = match args.ledger {
        Some(path) => Ledger::Apply(path),
        None => Ledger::Without,
    };
    let without = matches!(ledger, Ledger::Without);
    let cfg = server_config(args.server)?;
    init_logging(cfg.log_format);
    let Some(from) = args.from else {
        let Ledger::Apply(path) = ledger else {
            anyhow::bail!("restore: give --from, or --apply-ledger with --ledger");
        };
        let a = server::restore::apply_ledger_in_place(&cfg, &path).await?;
        print_applied(&a, json);
        return Ok(());
    };
    let done = server::restore::restore(&cfg, &from, ledger).await?;
    let taken = strongbox::vault::fmt_time(done.backup_time);
    if without {
        eprintln!(
            "warning: restored WITHOUT the shred ledger: subjects and tenants erased after {taken} may be readable again"
        );
    }
    if json {
        let a = done.applied.unwrap_or_default();
        let mut report = applied_json(&a);
        report["backup_time"] = taken.into();
        report["restarted"] = done.restarted.into();
        report["ledger_applied"] = (!without).into();
        println!("{report}");
        return Ok(());
    }
    if done.restarted {
        println!("an interrupted restore was found and started over from the backup");
    }
    println!(
        "restored the backup taken at {taken} into {}",
        cfg.data_dir.display()
    );
    if let Some(a) = done.applied {
        print_applied(&a, false);
    }
    Ok(())
}

/// What a ledger replay did, as JSON.
fn applied_json(a: &strongbox::vault::RestoreApplied) -> serde_json::Value {
    serde_json::json!({
        "ledger_applied": true,
        "ledger_entries": a.entries,
        "subjects_erased": a.subjects,
        "tenants_shredded": a.tenants,
        "data_keys_destroyed": a.data_keys,
        "keks_retired": a.keks,
        "records_expired": a.expired,
    })
}

/// What a ledger replay did.
fn print_applied(a: &strongbox::vault::RestoreApplied, json: bool) {
    if json {
        println!("{}", applied_json(a));
        return;
    }
    println!(
        "shred ledger applied: {} entries; {} subjects erased, {} tenants shredded, {} data keys destroyed, {} KEK versions retired, {} records expired",
        a.entries, a.subjects, a.tenants, a.data_keys, a.keks, a.expired
    );
}

/// Prints the shell's completions; a closed pipe (`| head`) ends quietly.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli::command(false), "strongbox", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The server configuration: defaults, the config file, then the flags.
fn server_config(args: cli::ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut cfg = ServerConfig::load(
        args.config.as_deref(),
        args.data_dir,
        args.listen.as_deref(),
    )?;
    // Flags override the file.
    if let Some(format) = args.log_format {
        cfg.log_format = format;
    }
    if let Some(tls) = strongbox::config::tls_files(args.tls_cert, args.tls_key, args.client_ca)? {
        cfg.tls = Some(tls);
    }
    cfg.insecure_plaintext |= args.insecure_plaintext;
    if args.root_key_env.is_some() {
        cfg.root_key_env = args.root_key_env;
        cfg.pkcs11 = None;
    }
    if let Some(p11) = args.pkcs11.config()? {
        cfg.pkcs11 = Some(p11);
        cfg.root_key_env = None;
    }
    if cfg.root_key_env.is_some() && cfg.pkcs11.is_some() {
        anyhow::bail!(
            "root_key_env and pkcs11_module: the root key comes from one place; set only one"
        );
    }
    if args.audit_anchor.is_some() {
        cfg.audit_anchor = args.audit_anchor;
    }
    if args.shred_ledger.is_some() {
        cfg.shred_ledger = args.shred_ledger;
    }
    if let Some(url) = args.database_url {
        cfg.database_url = Some(strongbox::config::DatabaseUrl::parse(url)?);
    }
    if let Some(ca) = args.database_ca {
        cfg.database_ca = Some(ca);
    }
    if let Some(a) = args.metrics_listen {
        cfg.metrics_listen = Some(strongbox::config::parse_addr("metrics_listen", &a)?);
    }
    Ok(cfg)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
