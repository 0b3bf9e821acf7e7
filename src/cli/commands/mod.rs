//! The client subcommands: each builds one request, calls the server and
//! prints the answer (JSON with `--json`).

use anyhow::Context;
use serde_json::json;

use super::{Cli, Command, HoldCmd, KeyCmd};
use crate::api::pb;
use crate::client::Client;

mod audit;
mod key;
mod principal;
mod record;
mod retention;
mod subject;
mod tenant;

use audit::audit;
use key::key;
use principal::principal;
use record::record;
use retention::retention;
use subject::subject;
use tenant::{hold_json, hold_line, tenant};

pub(super) async fn run(cli: Cli) -> anyhow::Result<()> {
    // The commands that work on the data directory or the HSM directly.
    match cli.command {
        Command::Key(KeyCmd::MoveRoot(args)) => {
            return super::offline::move_root(args, cli.json).await;
        }
        Command::Key(KeyCmd::HsmCheck(args)) => {
            return super::offline::hsm_check(args, cli.json).await;
        }
        Command::Enrol { key_out } => return enrol(&key_out, cli.json),
        _ => {}
    }
    let tls = crate::client::ClientTls {
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    };
    let mut client = Client::connect_tls(&cli.endpoint, cli.api_key.as_deref(), &tls).await?;
    if let Some(purpose) = &cli.purpose {
        client = client.with_purpose(purpose)?;
    }
    let json = cli.json;
    match cli.command {
        Command::Serve(_) => anyhow::bail!("serve is not a client command"),
        Command::Restore(_) => {
            anyhow::bail!("restore runs on the data directory, without a server")
        }
        Command::Completions { .. } => anyhow::bail!("completions needs no server"),
        Command::Tenant(cmd) => tenant(&client, cmd, json).await,
        Command::Principal(cmd) => principal(&client, cmd, json).await,
        Command::Record(cmd) => record(&client, cmd, json).await,
        Command::Subject(cmd) => subject(&client, cmd, json).await,
        Command::Audit(cmd) => audit(&client, cmd, json).await,
        Command::Retention(cmd) => retention(&client, cmd, json).await,
        Command::Hold(HoldCmd::List { tenant }) => {
            let r = client
                .tenants()
                .list_holds(pb::ListHoldsRequest { tenant })
                .await?
                .into_inner();
            for h in &r.holds {
                if json {
                    print_json(&hold_json(h));
                } else {
                    println!("{}", hold_line(h));
                }
            }
            Ok(())
        }
        Command::Key(cmd) => key(&client, cmd, json).await,
        Command::Bench(args) => super::bench::run(&client, args, json).await,
        Command::Enrol { .. } => anyhow::bail!("enrol needs no server"),
        Command::Backup { out } => backup(&client, &out, json).await,
    }
}

/// `strongbox enrol`: a key made here, written to `path` (0600, new file),
/// and the enrolment that registers it.
fn enrol(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, enrolment) = crate::api_key::enrol();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "--key-out: cannot create {} (it must not exist)",
                path.display()
            )
        })?;
    writeln!(f, "{}", key.expose())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("--key-out: cannot write {}", path.display()))?;
    if json {
        print_json(
            &json!({ "enrolment": enrolment.token(), "key_id": enrolment.key_id, "key_file": path }),
        );
    } else {
        eprintln!(
            "key written to {} (mode 0600): keep it. Give the enrolment below to whoever creates your principal (`principal create --enrolment ...`); it holds no secret.",
            path.display()
        );
        println!("{}", enrolment.token());
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// `strongbox backup --out FILE`: streamed to FILE.partial, renamed when whole.
async fn backup(client: &Client, out: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    anyhow::ensure!(
        !out.exists(),
        "--out: {} exists; a backup never overwrites a file",
        out.display()
    );
    let partial = out.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("--out: cannot create {}", partial.display()))?;
    let started = std::time::Instant::now();
    let written = async {
        let mut stream = client
            .backup()
            .backup(pb::BackupRequest {})
            .await?
            .into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)?;
            bytes += chunk.data.len() as u64;
        }
        file.sync_all()?;
        Ok::<_, anyhow::Error>(bytes)
    }
    .await;
    let bytes = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, out)
        .with_context(|| format!("--out: cannot rename to {}", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({ "file": out, "bytes": bytes, "seconds": secs }));
    } else {
        println!(
            "backup written to {} ({bytes} bytes in {secs:.1} s)",
            out.display()
        );
    }
    Ok(())
}
