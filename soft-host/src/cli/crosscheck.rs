//! `soft crosscheck`: a device's logits, from its saved log, against the host's, bit for bit.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::common::{load_blob, open_model};
use crate::crosscheck::{check, BlobCheck, DeviceLog};
use crate::error::{Context, Error, OrFail, Result};
use crate::inference::precision_name;
use crate::outln;

/// Compare the logits a device logged (probe-rs run output, a serial capture) with the
/// host's, bit for bit; exit 1 on any difference.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob the device ran.
    model: PathBuf,
    /// The device's log: its CLOCK, BLOB and LOGITS lines, anywhere among other text;
    /// - reads standard input.
    #[arg(long)]
    device_log: PathBuf,
    /// Check the blob the log tags so [default: every blob in the log with the model's
    /// CRC-32].
    #[arg(long)]
    tag: Option<String>,
    /// The demo's test split, for `digit:` inputs [default: the bundled models/digits].
    #[arg(long)]
    digits: Option<PathBuf>,
    /// Print one JSON object (model, crc32, device_log, clock, blobs with their runs,
    /// passed, first_difference); still exit 1 on a difference.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let text = read_log(&args.device_log)?;
    let log_name = args.device_log.display().to_string();
    let log = DeviceLog::parse(&text).with_context(|| format!("device log {log_name}"))?;
    let blob = load_blob(&args.model)?;
    let model = open_model(&blob, &args.model)?;
    let crc = soft_core::Blob::stored_crc32(blob.as_bytes())
        .or_fail(Error::Usage, "the blob has no CRC-32")?;
    let digits = args.digits.unwrap_or_else(crate::demo::default_dir);
    let checks = check(&model, crc, &log, args.tag.as_deref(), &digits)
        .with_context(|| format!("{} against {log_name}", args.model.display()))?;
    let verdict = verdict(&checks, &args.model, &log_name);
    if args.json {
        outln!(
            "{}",
            json(&checks, &args.model, crc, &log_name, &log, &verdict)
        )?;
    } else {
        print_text(&checks, &args.model, crc, &log_name, &log)?;
    }
    verdict
}

/// The log's text: a file, or standard input for `-`. Bytes that are not UTF-8 (noise on a
/// serial line) become U+FFFD, so only the lines they sit in can fail.
fn read_log(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", Path::new("standard input"), e))?;
    } else {
        bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `Ok` if every logit matched, else one line naming the first difference.
fn verdict(checks: &[BlobCheck], model: &Path, log: &str) -> Result<()> {
    let total = checks.iter().map(|c| c.counts().0).sum::<usize>();
    let differ = checks.iter().map(|c| c.counts().1).sum::<usize>();
    let runs = checks.iter().map(|c| c.runs.len()).sum::<usize>();
    let bad_runs = checks
        .iter()
        .flat_map(|c| &c.runs)
        .filter(|r| r.first_difference().is_some())
        .count();
    match checks
        .iter()
        .find_map(|c| c.first_mismatch().map(|m| (c, m)))
    {
        None => Ok(()),
        Some((c, (run, d))) => Err(Error::Check(format!(
            "{} differs from the device ({log}): blob {} {} (line {}), {d}; {differ} of \
             {total} logits differ, in {bad_runs} of {runs} runs",
            model.display(),
            c.blob.tag,
            run.input,
            run.line
        ))),
    }
}

fn print_text(
    checks: &[BlobCheck],
    model: &Path,
    crc: u32,
    log_name: &str,
    log: &DeviceLog,
) -> Result<()> {
    let ms = |ticks: u64| {
        log.clock.as_ref().map_or("-".to_string(), |c| {
            format!("{:.2}", ticks as f64 * 1e3 / c.hz as f64)
        })
    };
    for c in checks {
        let b = &c.blob;
        outln!(
            "{} (CRC-32 {crc:08x}) against {log_name}: blob {} (line {}), {} activations, {} classes",
            model.display(),
            b.tag,
            b.line,
            precision_name(b.precision),
            b.classes
        )?;
        outln!()?;
        outln!("| input | bit-identical | worst ulps | host top-1 | device top-1 | device ticks | device ms |")?;
        outln!("|---|---:|---:|---:|---:|---:|---:|")?;
        for r in &c.runs {
            outln!(
                "| {} | {}/{} | {} | {} | {} | {} | {} |",
                r.input,
                r.equal(),
                r.host.len(),
                r.max_ulps(),
                r.host_top1(),
                r.device_top1(),
                r.ticks,
                ms(r.ticks)
            )?;
        }
        outln!()?;
    }
    if let Some(clock) = &log.clock {
        outln!(
            "device clock: {} ticks per second ({})",
            clock.hz,
            clock.source
        )?;
    }
    let total = checks.iter().map(|c| c.counts().0).sum::<usize>();
    let runs = checks.iter().map(|c| c.runs.len()).sum::<usize>();
    if checks.iter().all(|c| c.first_mismatch().is_none()) {
        outln!(
            "crosscheck OK: {runs} inference{}, all {total} logits bit-identical between the device and the host",
            if runs == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

fn json(
    checks: &[BlobCheck],
    model: &Path,
    crc: u32,
    log_name: &str,
    log: &DeviceLog,
    verdict: &Result<()>,
) -> serde_json::Value {
    let first = checks.iter().find_map(|c| {
        c.first_mismatch().map(|(run, d)| {
            serde_json::json!({
                "tag": c.blob.tag,
                "input": run.input.to_string(),
                "line": run.line,
                "class": d.class,
                "host": format!("{:08x}", d.host),
                "device": format!("{:08x}", d.device),
                "ulps": d.ulps,
            })
        })
    });
    let blobs: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            let runs: Vec<serde_json::Value> = c
                .runs
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "input": r.input.to_string(),
                        "line": r.line,
                        "ticks": r.ticks,
                        "classes": r.host.len(),
                        "bit_identical": r.equal(),
                        "max_ulps": r.max_ulps(),
                        "host_top1": r.host_top1(),
                        "device_top1": r.device_top1(),
                        "first_difference": r.first_difference().map(|d| serde_json::json!({
                            "class": d.class,
                            "host": format!("{:08x}", d.host),
                            "device": format!("{:08x}", d.device),
                            "ulps": d.ulps,
                        })),
                    })
                })
                .collect();
            serde_json::json!({
                "tag": c.blob.tag,
                "line": c.blob.line,
                "bytes": c.blob.bytes,
                "activations": precision_name(c.blob.precision),
                "classes": c.blob.classes,
                "runs": runs,
            })
        })
        .collect();
    serde_json::json!({
        "model": model.display().to_string(),
        "crc32": format!("{crc:08x}"),
        "device_log": log_name,
        "clock": log.clock.as_ref().map(|c| serde_json::json!({"hz": c.hz, "source": c.source})),
        "blobs": blobs,
        "passed": verdict.is_ok(),
        "first_difference": first,
    })
}
