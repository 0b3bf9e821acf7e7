//! The commands that act on the data directory or the HSM directly rather
//! than through a server: moving the root key into an HSM (with the server
//! stopped) and checking how the HSM holds it.

use serde_json::json;

use super::{MoveRootArgs, Pkcs11Args};
use crate::rootkey::pkcs11::{Hsm, Pkcs11Config};
use crate::server::{self, MoveOutcome};

fn required(args: &Pkcs11Args) -> anyhow::Result<Pkcs11Config> {
    args.config()?.ok_or_else(|| {
        anyhow::anyhow!(
            "--pkcs11-module and --pkcs11-token: name the token that is to hold the root key"
        )
    })
}

pub(super) async fn move_root(args: MoveRootArgs, json: bool) -> anyhow::Result<()> {
    let target = required(&args.pkcs11)?;
    let database = args
        .database_url
        .map(crate::config::DatabaseUrl::parse)
        .transpose()?
        .map(|url| (url, args.database_ca));
    let outcome = server::move_root_to_hsm(
        &args.data_dir,
        database,
        (args.root_key_file, args.root_key_env),
        crate::config::audit_anchor_path(args.audit_anchor.clone(), &args.data_dir),
        &target,
    )
    .await?;
    match outcome {
        MoveOutcome::Moved { keys, from, to } => {
            if json {
                println!(
                    "{}",
                    json!({ "outcome": "moved", "keys_rewrapped": keys, "from": from, "to": to })
                );
            } else {
                println!("root key moved: {keys} keys rewrapped from {from} to {to}");
                println!(
                    "the old root key no longer opens this vault; once the server runs with the HSM, destroy it"
                );
            }
        }
        MoveOutcome::Finished { to } => {
            if json {
                println!("{}", json!({ "outcome": "finished", "to": to }));
            } else {
                println!(
                    "root key move finished: the move that was cut short committed; the root key is {to}"
                );
            }
        }
        MoveOutcome::AlreadyThere { to } => {
            if json {
                println!("{}", json!({ "outcome": "already_there", "to": to }));
            } else {
                println!("nothing to do: the root key already is {to}");
            }
        }
    }
    Ok(())
}

pub(super) async fn hsm_check(args: Pkcs11Args, json: bool) -> anyhow::Result<()> {
    let mut cfg = required(&Pkcs11Args {
        pkcs11_key_label: None,
        ..args.clone()
    })?;
    // Any label may be inspected, a staged or replaced root key included.
    if let Some(label) = args.pkcs11_key_label {
        cfg.key_label = label;
    }
    let (uri, label) = (cfg.uri(), cfg.key_label.clone());
    let report = tokio::task::spawn_blocking(move || Hsm::connect(&cfg)?.inspect(&label))
        .await??
        .ok_or_else(|| anyhow::anyhow!("NOT_FOUND: no key {uri} in the token"))?;
    let holds = report.sensitive
        && !report.extractable
        && report.always_sensitive
        && report.never_extractable
        && !report.value_readable;
    if json {
        println!(
            "{}",
            json!({
                "key": uri,
                "bits": report.bits,
                "sensitive": report.sensitive,
                "extractable": report.extractable,
                "always_sensitive": report.always_sensitive,
                "never_extractable": report.never_extractable,
                "generated_in_token": report.generated_in_token,
                "value_readable": report.value_readable,
                "ok": holds,
            })
        );
    } else {
        println!("key                 {uri}");
        println!("bits                {}", report.bits);
        println!("sensitive           {}", yes(report.sensitive));
        println!("extractable         {}", yes(report.extractable));
        println!("always sensitive    {}", yes(report.always_sensitive));
        println!("never extractable   {}", yes(report.never_extractable));
        println!("generated in token  {}", yes(report.generated_in_token));
        println!("value readable      {}", yes(report.value_readable));
    }
    if !holds {
        anyhow::bail!(
            "FAILED_PRECONDITION: {uri} could leave the HSM: it must be sensitive and never extractable"
        );
    }
    if !json {
        println!("ok: the root key cannot leave the HSM");
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
