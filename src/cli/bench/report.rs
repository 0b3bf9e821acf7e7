//! What `bench` prints for a series of ops: one JSON object (or a few
//! lines of text) per op, and with `health` among them, each op's
//! throughput as a fraction of that ceiling measured in the same run.

use serde_json::json;

use super::{BenchArgs, BenchOp, LoadResult};

/// One op's load and the CPU it cost.
pub(super) struct Run {
    pub(super) op: BenchOp,
    pub(super) r: LoadResult,
    /// Server CPU per op, µs, when server pids were given.
    pub(super) server_cpu: Option<f64>,
    pub(super) database_cpu: Option<f64>,
}

/// The health ceiling's throughput, if `health` ran.
fn ceiling(runs: &[Run]) -> Option<f64> {
    runs.iter()
        .find(|run| run.op == BenchOp::Health)
        .map(|run| run.r.ops_per_sec)
        .filter(|ops| *ops > 0.0)
}

fn fraction(run: &Run, ceiling: Option<f64>) -> Option<f64> {
    ceiling
        .filter(|_| run.op != BenchOp::Health)
        .map(|c| run.r.ops_per_sec / c)
}

fn as_json(args: &BenchArgs, run: &Run, ceiling: Option<f64>) -> serde_json::Value {
    let r = &run.r;
    let mut v = json!({
        "op": run.op.name(),
        "concurrency": args.concurrency,
        "servers": args.servers(),
        "duration_s": r.elapsed_s,
        "value_size": args.value_size,
        "ops": r.ops,
        "ops_per_sec": r.ops_per_sec,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "errors": r.errors,
        "first_error": r.first_error,
        "server_cpu_us_per_op": run.server_cpu,
        "database_cpu_us_per_op": run.database_cpu,
    });
    if let Some(f) = fraction(run, ceiling) {
        v["fraction_of_health"] = json!(f);
    }
    v
}

fn as_text(args: &BenchArgs, run: &Run, ceiling: Option<f64>) {
    let r = &run.r;
    println!(
        "{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors ({} clients on {} server(s), {:.1} s, {}-byte values)",
        run.op.name(),
        r.ops_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.errors,
        args.concurrency,
        args.servers(),
        r.elapsed_s,
        args.value_size
    );
    if let Some(c) = run.server_cpu {
        println!("  server CPU {c:.1} us/op");
    }
    if let Some(c) = run.database_cpu {
        println!("  database CPU {c:.1} us/op");
    }
    if let Some(f) = fraction(run, ceiling) {
        println!("  {:.0}% of the health ceiling", f * 100.0);
    }
    if let Some(e) = &r.first_error {
        eprintln!("{}: first error: {e}", run.op.name());
    }
}

/// One op: its JSON object as before. Several: `{"runs": [...]}`, with
/// `health_ops_per_sec` when the ceiling ran.
pub(super) fn print(args: &BenchArgs, runs: &[Run], json_out: bool) {
    let ceiling = ceiling(runs);
    if !json_out {
        for run in runs {
            as_text(args, run, ceiling);
        }
        return;
    }
    let objects: Vec<_> = runs.iter().map(|run| as_json(args, run, ceiling)).collect();
    match objects.as_slice() {
        [one] => println!("{one}"),
        _ => println!(
            "{}",
            json!({ "runs": objects, "health_ops_per_sec": ceiling })
        ),
    }
}
