//! `cargo xtask crosscheck [--core m4|m33]`: builds the firmware for a Cortex-M4F (QEMU
//! `mps2-an386`, the default) or a Cortex-M33 (`mps2-an505`), runs it in QEMU with
//! `-icount shift=0`, and checks that every logit it prints has the same
//! bits as the host build of `soft-core` computes for the same blob, input and precision,
//! with the code behind `soft crosscheck` (`soft_host::crosscheck`): on the defmt log and on
//! the copy the firmware writes to its UART. It also reports the emulated instruction count
//! per inference and per multiply-accumulate.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use soft_core::{Model, ModelConfig};
use soft_host::crosscheck::{check, BlobCheck, DeviceLog, Input};
use soft_host::demo::{load_split, Split, SIDE};
use soft_host::{AlignedBlob, WeightDtype};

/// Blobs the firmware embeds, by the tag it prints.
const BLOBS: [(&str, &str); 3] = [
    ("f16", "soft_digits_f16.soft"),
    ("int8", "soft_digits_int8.soft"),
    ("w8a8", "soft_digits_w8a8.soft"),
];
/// A core the firmware runs on in QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Core {
    /// For people: `Cortex-M4F`.
    name: &'static str,
    /// Rust target.
    target: &'static str,
    /// QEMU `-cpu`.
    cpu: &'static str,
    /// QEMU `-machine`.
    machine: &'static str,
    /// The core clock, which SysTick counts, in Hz.
    hz: u64,
}

impl Core {
    /// With `-icount shift=0` the virtual clock advances 1 ns per instruction.
    const fn instructions_per_tick(&self) -> u64 {
        1_000_000_000 / self.hz
    }
}

/// The MPS2 AN386 (Cortex-M4F, ARMv7E-M with the DSP kernels), 25 MHz in QEMU.
const M4: Core = Core {
    name: "Cortex-M4F",
    target: "thumbv7em-none-eabihf",
    cpu: "cortex-m4",
    machine: "mps2-an386",
    hz: 25_000_000,
};
/// The MPS2 AN505 (Cortex-M33, ARMv8-M Mainline, Secure state, the generic kernels),
/// 20 MHz in QEMU.
const M33: Core = Core {
    name: "Cortex-M33",
    target: "thumbv8m.main-none-eabihf",
    cpu: "cortex-m33",
    machine: "mps2-an505",
    hz: 20_000_000,
};
/// The PSRAM check's core.
const INSTRUCTIONS_PER_TICK: u64 = M4.instructions_per_tick();
/// `cortex_m::asm::delay(n)` (cortex-m 0.7.10) spins `n + 1` times round `subs; bne`.
const DELAY_INSTRUCTIONS_PER_ITERATION: u64 = 2;

const USAGE: &str =
    "usage: cargo xtask crosscheck [--core m4|m33] [--timeout SECONDS] | psram [--timeout SECONDS]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut timeout, mut core) = (None, None);
    let mut flags = args.get(1..).unwrap_or_default().iter();
    while let Some(flag) = flags.next() {
        let value = flags
            .next()
            .with_context(|| format!("{flag} takes a value; {USAGE}"))?;
        match flag.as_str() {
            "--timeout" => {
                timeout = Some(value.parse().context("--timeout takes whole seconds")?);
            }
            "--core" => {
                core = Some(match value.as_str() {
                    "m4" => M4,
                    "m33" => M33,
                    _ => bail!("--core takes m4 or m33; {USAGE}"),
                });
            }
            _ => bail!("{USAGE}"),
        }
    }
    // Each command's QEMU timeout when --timeout is not given.
    match args.first().map(String::as_str) {
        Some("crosscheck") => crosscheck(
            core.unwrap_or(M4),
            Duration::from_secs(timeout.unwrap_or(600)),
        ),
        Some("psram") if core.is_none_or(|c| c == M4) => {
            psram(Duration::from_secs(timeout.unwrap_or(900)))
        }
        Some("psram") => bail!("the PSRAM check runs on the Cortex-M4F (mps2-an386) only"),
        _ => bail!("{USAGE}"),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn crosscheck(core: Core, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let root = repo_root();
    let demo_dir = root.join("target").join("demo");
    let models = root.join("models").join("digits");

    // 1. Demo blobs.
    ensure_demo_blobs(&root)?;

    // 2. Firmware. Run cargo from inside firmware/ so that firmware/.cargo/config.toml
    //    (target, linker script, runner) applies.
    eprintln!("== building firmware ({}, release)", core.target);
    let firmware = root.join("firmware");
    let elf = build_firmware(&firmware, core.target, &[])?;

    // 3. QEMU.
    eprintln!("== running {} in qemu-system-arm", elf.display());
    let (output, uart) = run_qemu(core, &elf, &[], timeout)?;
    no_warnings(&output)?;
    let Output {
        digits,
        kernels,
        calib,
        done,
    } = parse(&output)?;
    let ram = memory(&output)?;
    let log = DeviceLog::parse(&output).context("the firmware's defmt log")?;
    let uart_log = DeviceLog::parse(&uart).context("the firmware's UART")?;

    // 4. Host reference and comparison: soft crosscheck's code, on both logs.
    let split = load_split(&models)?;
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mut macs = 0;
    for (tag, file) in BLOBS {
        let path = demo_dir.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let aligned = AlignedBlob::new(&bytes);
        let model = Model::from_blob(aligned.as_bytes())?;
        macs = soft_host::cost::macs(model.config(), SIDE, SIDE);
        let blob = FirmwareBlob {
            tag,
            model: &model,
            crc32: soft_core::Blob::stored_crc32(aligned.as_bytes())
                .context("the blob has no CRC-32")?,
            macs,
            instructions_per_tick: core.instructions_per_tick(),
        };
        let (r, f) = compare_blob(&blob, [&log, &uart_log], &split, &models, digits)?;
        rows.extend(r);
        failures.extend(f);
    }
    if !done {
        failures.push("the firmware did not print DONE".into());
    }
    let serial_lines = uart.lines().filter(|l| l.starts_with("soft ")).count();
    if serial_lines != rows.len() {
        failures.push(format!(
            "{serial_lines} result lines on the UART, expected {}",
            rows.len()
        ));
    }

    println!();
    println!("| blob  | input              | label | host | fw   | bits     | instructions | instr/MAC |");
    println!("|-------|--------------------|------:|-----:|-----:|---------:|-------------:|----------:|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!(
        "model: {} MACs per 64×64 inference (soft_host::cost::macs); activations F16",
        group(macs)
    );
    println!();
    println!("| kernel (one call, synthetic weights) | MACs    | instructions | instr/MAC |");
    println!("|--------------------------------------|--------:|-------------:|----------:|");
    let per_tick = core.instructions_per_tick();
    for (name, kmacs, ticks) in &kernels {
        let instructions = ticks * per_tick;
        println!(
            "| {name:<36} | {:>7} | {:>12} | {:>9.2} |",
            group(*kmacs),
            group(instructions),
            instructions as f64 / *kmacs as f64
        );
    }
    if kernels.is_empty() {
        failures.push("the firmware printed no KERNEL lines".into());
    }
    println!(
        "clock: SysTick at {} MHz under -icount shift=0 = {per_tick} instructions per tick (±{per_tick}); calibration: {} delay-loop instructions took {} ticks = {:.3} instructions/tick",
        core.hz / 1_000_000,
        calib.0,
        calib.1,
        calib.0 as f64 / calib.1 as f64
    );
    let calibrated = calib.0 as f64 / calib.1 as f64;
    if (calibrated - per_tick as f64).abs() > 0.01 * per_tick as f64 {
        failures.push(format!(
            "clock calibration off: {calibrated:.3} instructions per tick, expected {per_tick}"
        ));
    }
    match &log.clock {
        Some(c) if c.hz == core.hz => {}
        other => failures.push(format!(
            "the firmware's CLOCK line says {other:?}, expected {} Hz",
            core.hz
        )),
    }
    match &ram {
        Some(m) => print_memory(m),
        None => failures.push("the firmware printed no MEMORY line".into()),
    }
    // The device's integer kernels against its generic ones, shape by shape.
    if !output.lines().any(|l| l.starts_with("W8A8-CHECK")) {
        failures.push("the firmware's integer kernel check did not pass".into());
    }
    println!("took {:.1} s", start.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!(
            "crosscheck OK: {} inferences, every logit bit-identical between {} (QEMU {}) and host",
            rows.len(),
            core.name,
            core.machine
        );
        Ok(())
    } else {
        for f in &failures {
            println!("MISMATCH: {f}");
        }
        bail!("crosscheck failed ({} problems)", failures.len())
    }
}

/// One blob the firmware embeds.
struct FirmwareBlob<'a> {
    tag: &'a str,
    model: &'a Model<'a>,
    crc32: u32,
    /// Multiply-accumulates per inference.
    macs: u64,
    /// The core's clock.
    instructions_per_tick: u64,
}

/// One blob's runs in the firmware's defmt log and UART copy (`logs`), each against the
/// host with `soft crosscheck`'s code: table rows (from the defmt log) and failures. Each
/// log must hold `digits` digit runs of the blob, and the two logs as many runs.
fn compare_blob(
    blob: &FirmwareBlob<'_>,
    logs: [&DeviceLog; 2],
    split: &Split,
    models: &Path,
    digits: usize,
) -> Result<(Vec<String>, Vec<String>)> {
    let FirmwareBlob {
        tag,
        model,
        crc32,
        macs,
        instructions_per_tick,
    } = *blob;
    let mut failures = Vec::new();
    let [checked, uart] = logs.map(
        |log| match &check(model, crc32, log, Some(tag), models)?[..] {
            [one] => Ok(one.clone()),
            _ => bail!("one blob tagged {tag} expected"),
        },
    );
    let (checked, uart) = (checked?, uart.context("the UART")?);
    let digit_runs = checked
        .runs
        .iter()
        .filter(|r| matches!(r.input, Input::Digit(_)))
        .count();
    if digit_runs != digits {
        failures.push(format!(
            "blob {tag}: {digit_runs} digits run, expected {digits}"
        ));
    }
    failures.extend(mismatches(&checked, "defmt log"));
    failures.extend(mismatches(&uart, "UART"));
    if uart.runs.len() != checked.runs.len() {
        failures.push(format!(
            "blob {tag}: {} runs on the UART, {} in the defmt log",
            uart.runs.len(),
            checked.runs.len()
        ));
    }
    let rows = checked
        .runs
        .iter()
        .map(|run| {
            let label = match run.input {
                Input::Digit(i) => split
                    .labels
                    .get(i)
                    .map_or("?".to_string(), ToString::to_string),
                Input::Pattern { .. } => "-".to_string(),
            };
            let instructions = run.ticks * instructions_per_tick;
            format!(
                "| {tag:<5} | {:<18} | {label:>5} | {:>4} | {:>4} | {:>8} | {:>12} | {:>9.2} |",
                run.input.to_string(),
                run.host_top1(),
                run.device_top1(),
                format!("{}/{}", run.equal(), run.host.len()),
                group(instructions),
                instructions as f64 / macs as f64,
            )
        })
        .collect();
    Ok((rows, failures))
}

/// Every run of `c` whose bits differ from the host's, one failure each.
fn mismatches(c: &BlobCheck, source: &str) -> Vec<String> {
    c.runs
        .iter()
        .filter_map(|r| {
            let d = r.first_difference()?;
            Some(format!(
                "{} {} ({source}, line {}): {}/{} logits bit-identical, worst {} ulp; first: {d}\n  host     {}\n  firmware {}",
                c.blob.tag,
                r.input,
                r.line,
                r.equal(),
                r.host.len(),
                r.max_ulps(),
                hex(&r.host),
                hex(&r.device)
            ))
        })
        .collect()
}

/// The seed of the PSRAM check's random weights. Where QEMU loads the blob, the input's
/// seed and the runs (input side, placement) are `soft_device::psram`'s, as the firmware
/// uses them.
const PSRAM_WEIGHT_SEED: u64 = 7;

/// Fails on the firmware's `WARN` lines: a run whose arena high-water marks differ from
/// its plan (`soft_device::run`).
fn no_warnings(output: &str) -> Result<()> {
    let warnings: Vec<&str> = output.lines().filter(|l| l.starts_with("WARN ")).collect();
    ensure!(
        warnings.is_empty(),
        "the firmware warned:\n{}",
        warnings.join("\n")
    );
    Ok(())
}

/// `cargo xtask psram`: random-weight `soft_tiny` blobs (int8, then W8A8) in PSRAM, on two
/// memories (the large one in PSRAM after the blob, at most 512 KiB of SRAM in all), one
/// inference per run of `soft_device::psram::RUNS` on the Cortex-M4F; every logit must
/// match the host's bits.
fn psram(timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let root = repo_root();
    ensure_demo_blobs(&root)?;
    eprintln!("== building firmware (thumbv7em-none-eabihf, release, --features psram)");
    let elf = build_firmware(&root.join("firmware"), M4.target, &["psram"])?;
    for dtype in [WeightDtype::I8, WeightDtype::W8A8] {
        psram_model(&root, &elf, dtype, timeout)?;
    }
    println!("took {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// A `PLAN` line of the PSRAM firmware.
struct PsramPlan {
    tag: String,
    side: usize,
    placement: String,
    fast: usize,
    large: usize,
    large_arena: usize,
}

/// One `soft_tiny` blob of `dtype` through the PSRAM firmware `elf`, against the host.
fn psram_model(root: &Path, elf: &Path, dtype: WeightDtype, timeout: Duration) -> Result<()> {
    let name = dtype.name();
    eprintln!("== soft_tiny, random weights, {name}");
    let cfg = ModelConfig::preset("soft_tiny").context("the soft_tiny preset")?;
    let checkpoint = soft_host::synthetic_checkpoint(&cfg, PSRAM_WEIGHT_SEED);
    let bytes = soft_host::build_blob(&checkpoint, &cfg, dtype)?;
    ensure!(
        bytes.len() <= soft_device::psram::PSRAM_BYTES,
        "the blob ({} bytes) does not fit the {}-byte PSRAM",
        bytes.len(),
        soft_device::psram::PSRAM_BYTES
    );
    let dir = root.join("target").join("psram");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let blob_path = dir.join(format!("soft_tiny_{name}_random.soft"));
    soft_host::io::Output::new(&blob_path, &[])?.write(&bytes)?;
    eprintln!(
        "wrote {} ({} bytes)",
        blob_path.display(),
        group(bytes.len() as u64)
    );

    let aligned = AlignedBlob::new(&bytes);
    let model = Model::from_blob(aligned.as_bytes())?;
    eprintln!(
        "== running {} in qemu-system-arm, blob in PSRAM",
        elf.display()
    );
    let loader = format!(
        "loader,file={},addr={:#x},force-raw=on",
        blob_path.display(),
        soft_device::psram::PSRAM_BASE
    );
    let (output, uart) = run_qemu(M4, elf, &["-device".into(), loader], timeout)?;
    no_warnings(&output)?;

    let (mut plans, mut load_ticks) = (Vec::new(), None);
    let mut steps = Vec::new();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["PLAN", tag, side, placement, fast, large, large_arena] => plans.push(PsramPlan {
                tag: tag.to_string(),
                side: side.parse()?,
                placement: placement.to_string(),
                fast: fast.parse()?,
                large: large.parse()?,
                large_arena: large_arena.parse()?,
            }),
            ["STEP", tag, _, stage, step, t] => steps.push((
                tag.to_string(),
                stage.parse::<u8>()?,
                step.to_string(),
                t.parse::<u64>()?,
            )),
            ["LOADED", _bytes, t] => load_ticks = Some(t.parse::<u64>()?),
            _ => {}
        }
    }
    // The host runs the same inputs and compares, as `soft crosscheck` does.
    eprintln!("== host runs");
    let log = DeviceLog::parse(&output).context("the firmware's defmt log")?;
    let crc =
        soft_core::Blob::stored_crc32(aligned.as_bytes()).context("the blob has no CRC-32")?;
    let models = root.join("models").join("digits");
    let ram = memory(&output)?.context("the firmware printed no MEMORY line")?;
    let options = soft_core::RunOptions::new(soft_device::psram::PRECISION);

    println!();
    println!(
        "soft_tiny {name} (random weights, blob {} bytes in PSRAM), f16 activations, \
         on two memories:",
        group(bytes.len() as u64)
    );
    if let Some(t) = load_ticks {
        println!(
            "blob parse + CRC check: {} instructions",
            group(t * INSTRUCTIONS_PER_TICK)
        );
    }
    println!();
    println!(
        "| input | placement | SRAM arena (plan = device) | PSRAM arena (plan = device) | \
         instructions | per MAC | logits bit-identical | top-1 host / device |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for want in soft_device::psram::RUNS {
        let Some(plan) = plans.iter().find(|p| p.tag == want.tag) else {
            bail!("the firmware logged no PLAN line for run {}", want.tag);
        };
        let host = model.plan_placed(want.side, want.side, &options, want.placement)?;
        ensure!(
            (plan.side, plan.placement.as_str(), plan.fast, plan.large)
                == (
                    want.side,
                    want.placement.name(),
                    host.peak_bytes,
                    host.large_bytes
                ),
            "run {}: the firmware planned {}x{} {} with {} + {} bytes, the host {} {} + {}",
            want.tag,
            plan.side,
            plan.side,
            plan.placement,
            plan.fast,
            plan.large,
            want.placement.name(),
            host.peak_bytes,
            host.large_bytes
        );
        ensure!(
            host.large_bytes <= plan.large_arena,
            "run {}: {} PSRAM arena bytes needed, {} left after the blob",
            want.tag,
            host.large_bytes,
            plan.large_arena
        );
        let checks = check(&model, crc, &log, Some(want.tag), &models)?;
        let [run] = &checks[0].runs[..] else {
            bail!(
                "the firmware logged {} runs for {}, expected one",
                checks[0].runs.len(),
                want.tag
            );
        };
        let expected = Input::Pattern {
            seed: soft_device::psram::IMAGE_SEED,
            height: want.side,
            width: want.side,
        };
        ensure!(
            run.input == expected,
            "the firmware ran {}, expected {expected}",
            run.input
        );
        let instructions = run.ticks * INSTRUCTIONS_PER_TICK;
        let macs = soft_host::cost::macs_placed(
            &cfg,
            want.side,
            want.side,
            options.precision,
            &options.schedule,
            want.placement,
        );
        println!(
            "| {s}×{s} | {} | {} | {} | {} | {:.2} | {}/{} | {} / {} |",
            want.placement.name(),
            group(host.peak_bytes as u64),
            group(host.large_bytes as u64),
            group(instructions),
            instructions as f64 / macs as f64,
            run.equal(),
            cfg.num_classes,
            run.host_top1(),
            run.device_top1(),
            s = want.side,
        );
        if let Some(d) = run.first_difference() {
            failures.push(format!(
                "{}: {} of {} logits differ between the Cortex-M4F and the host; first: {d}",
                want.tag,
                cfg.num_classes - run.equal(),
                cfg.num_classes
            ));
        }
    }
    println!();
    print_memory(&ram);
    let sram = ram.statics + ram.stack;
    let budget = soft_device::psram::SRAM_BYTES;
    for want in soft_device::psram::RUNS {
        let tag_steps: Vec<_> = steps
            .iter()
            .filter(|s| s.0 == want.tag)
            .map(|s| (s.1, s.2.clone(), s.3))
            .collect();
        let total = tag_steps.iter().map(|s| s.2).sum();
        println!();
        println!("{} ({}×{}):", want.tag, want.side, want.side);
        print_steps(&tag_steps, total);
    }
    for want in soft_device::psram::RUNS {
        ensure!(
            uart.contains(&format!("soft {}: pattern:", want.tag)),
            "the firmware wrote no result line for {} to the UART",
            want.tag
        );
    }
    ensure!(
        sram <= budget,
        "the image used {sram} bytes of SRAM (statics + stack), over {budget}"
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    println!(
        "psram OK: soft_tiny {name}, blob and large arena in PSRAM, {} of {} SRAM bytes \
         (statics + stack), every logit bit-identical",
        group(sram as u64),
        group(budget as u64)
    );
    Ok(())
}

/// Where an inference's instructions go, from the firmware's `STEP` lines.
fn print_steps(steps: &[(u8, String, u64)], total_ticks: u64) {
    if steps.is_empty() {
        return;
    }
    println!();
    println!("| stage | step | instructions | share |");
    println!("|---:|---|---:|---:|");
    for (stage, step, t) in steps {
        println!(
            "| {stage} | {step} | {} | {:.1} % |",
            group(t * INSTRUCTIONS_PER_TICK),
            100.0 * *t as f64 / total_ticks.max(1) as f64
        );
    }
}

/// The demo blobs the firmware embeds (its build script plans their arena): what
/// `cargo run --release -p soft-host -- demo` does, in process (the same library calls),
/// which spares a clean checkout a second, release build of soft-host's dependency tree.
fn ensure_demo_blobs(root: &Path) -> Result<()> {
    let demo_dir = root.join("target").join("demo");
    let models = root.join("models").join("digits");
    if BLOBS.iter().any(|(_, f)| !demo_dir.join(f).is_file()) {
        eprintln!("== demo blobs missing: running the demo (soft demo)");
        let outputs = soft_host::demo::blob_outputs(&models, &demo_dir)?;
        let images = load_split(&models)?.images.len();
        let rows = soft_host::demo::evaluate(&models, || {})?;
        print!("{}", soft_host::demo::table(&rows, images));
        soft_host::demo::write_blobs(&rows, &outputs)?;
        for o in &outputs {
            eprintln!("wrote {}", o.path().display());
        }
        soft_host::demo::check(&rows)?;
    }
    Ok(())
}

/// `cargo build --release` in `firmware/`; returns the path of the ELF it produced.
fn build_firmware(firmware: &Path, target: &str, features: &[&str]) -> Result<PathBuf> {
    let out = cargo()
        .current_dir(firmware)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
            "--target",
            target,
        ])
        .arg("--manifest-path")
        .arg(firmware.join("Cargo.toml"))
        .args(if features.is_empty() {
            Vec::new()
        } else {
            vec!["--features".to_string(), features.join(",")]
        })
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build for the firmware")?;
    ensure!(
        out.status.success(),
        "firmware build failed: {}",
        out.status
    );
    let mut elf = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "soft-firmware" {
            if let Some(path) = msg["executable"].as_str() {
                elf = Some(PathBuf::from(path));
            }
        }
    }
    elf.context("cargo did not report the firmware executable")
}

/// Runs the ELF in QEMU with a deterministic instruction clock; echoes and returns its
/// decoded defmt log and what it wrote to the board's UART.
fn run_qemu(
    core: Core,
    elf: &Path,
    extra: &[String],
    timeout: Duration,
) -> Result<(String, String)> {
    let serial = elf.with_extension("uart.txt");
    let _ = std::fs::remove_file(&serial);
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", core.cpu, "-machine", core.machine, "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0"])
        // stdout carries only the semihosting defmt frames: UART to a file, no monitor.
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .args(extra)
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-arm (is it installed?)")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().unwrap_or_default();
    eprintln!(
        "(qemu: {:.1} s wall clock)",
        started.elapsed().as_secs_f64()
    );
    match status {
        None => bail!("qemu timed out after {} s", timeout.as_secs()),
        Some(s) if !s.success() => bail!("the firmware failed: qemu {s}"),
        Some(_) => {
            let uart = std::fs::read_to_string(&serial).unwrap_or_default();
            let log = decode_defmt(elf, &output)?;
            eprint!("{log}UART:\n{uart}");
            Ok((log, uart))
        }
    }
}

/// Decodes the firmware's defmt frames into text lines, using the format table in its ELF.
fn decode_defmt(elf: &Path, frames: &[u8]) -> Result<String> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&bytes)?.context("the firmware has no defmt table")?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(frames);
    let mut text = String::new();
    loop {
        match decoder.decode() {
            Ok(frame) => writeln!(text, "{}", frame.display_message())?,
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                bail!("malformed defmt frame after:\n{text}")
            }
        }
    }
    Ok(text)
}

/// What the firmware printed.
struct Output {
    /// Digits it runs through each blob.
    digits: usize,
    /// Its `KERNEL` lines: name, multiply-accumulates, ticks.
    kernels: Vec<(String, u64, u64)>,
    /// Delay-loop instructions and the SysTick ticks they took.
    calib: (u64, u64),
    /// Whether it got to the end.
    done: bool,
}

fn parse(output: &str) -> Result<Output> {
    let mut kernels = Vec::new();
    let mut calib = None;
    let mut digits = None;
    let mut done = false;
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CALIB", iterations, ticks] => {
                let iterations: u64 = iterations.parse()?;
                calib = Some((
                    (iterations + 1) * DELAY_INSTRUCTIONS_PER_ITERATION,
                    ticks.parse()?,
                ));
            }
            ["KERNEL", name, macs, ticks, _checksum] => {
                kernels.push(((*name).to_string(), macs.parse()?, ticks.parse()?));
            }
            ["SOFT-FIRMWARE", _arena, n] => digits = Some(n.parse()?),
            ["DONE"] => done = true,
            _ => {}
        }
    }
    Ok(Output {
        digits: digits.context("the firmware printed no SOFT-FIRMWARE line")?,
        kernels,
        calib: calib.context("the firmware printed no CALIB line")?,
        done,
    })
}

/// The device's RAM as the firmware's `MEMORY` line reports it.
struct Memory {
    /// The arena, a static.
    arena: usize,
    /// Every static (`.data`, `.bss`), the arena included.
    statics: usize,
    /// The stack's high-water mark during the inferences.
    stack: usize,
}

/// The firmware's `MEMORY` line, if it printed one.
fn memory(output: &str) -> Result<Option<Memory>> {
    for line in output.lines() {
        if let ["MEMORY", arena, statics, stack] = line.split_whitespace().collect::<Vec<_>>()[..] {
            return Ok(Some(Memory {
                arena: arena.parse()?,
                statics: statics.parse()?,
                stack: stack.parse()?,
            }));
        }
    }
    Ok(None)
}

/// One line for the README: arena, other statics, stack, total.
fn print_memory(m: &Memory) {
    println!(
        "RAM on the device: arena {} + other statics {} + stack high-water {} = {} bytes",
        group(m.arena as u64),
        group(m.statics.saturating_sub(m.arena) as u64),
        group(m.stack as u64),
        group((m.statics + m.stack) as u64)
    );
}

fn hex(bits: &[u32]) -> String {
    bits.iter()
        .map(|b| format!("{b:08x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use soft_core::Precision;

    #[test]
    fn parses_firmware_lines() {
        let out = "SOFT-FIRMWARE 33632 4\nCLOCK 25000000 systick\nCALIB 4000000 200000\n\
                   KERNEL linear-f16 294912 22360 8d8b8e2c\n\
                   BLOB f16 0badf00d 671560 f16 10\n\
                   LAYER f16 digit:3 the stem 656947\n\
                   LOGITS f16 digit:3 2846193 0 10 bf1749e6 bf217a04 bf20bad7 bea45d89 \
                   bf4e4910 bf63fa60 bf25118a 4075695a bf306489 bf621e8b\n\
                   STEP f16 digit:3 0 Stem 1234\nDONE\n";
        let Output {
            digits,
            kernels,
            calib,
            done,
        } = parse(out).unwrap();
        assert_eq!(kernels, vec![("linear-f16".to_string(), 294_912, 22_360)]);
        assert_eq!((digits, calib, done), (4, (8_000_002, 200_000), true));
        let log = DeviceLog::parse(out).unwrap();
        assert_eq!(log.runs.len(), 1);
        assert_eq!(
            (log.runs[0].tag.as_str(), log.runs[0].input),
            ("f16", Input::Digit(3))
        );
        assert_eq!(log.runs[0].ticks, 2_846_193);
        assert_eq!(log.runs[0].logits[7], 0x4075_695a);
        assert_eq!(log.clock.unwrap().hz, M4.hz);
        assert!(parse("SOFT-FIRMWARE 1 1\nDONE\n").is_err());
        assert!(parse("DONE\n").is_err());
    }

    /// The path `cargo xtask crosscheck` takes for each blob, on logs made from the host's
    /// own logits (a small random W8A8 model at 64×64): passes, then names a flipped bit.
    #[test]
    fn compare_blob_checks_both_logs_with_soft_crosscheck() {
        use soft_host::testing::{micro_config, synthetic_blob};
        let blob = synthetic_blob(&micro_config(), 11, WeightDtype::W8A8);
        let model = Model::from_blob(blob.as_bytes()).unwrap();
        let crc32 = soft_core::Blob::stored_crc32(blob.as_bytes()).unwrap();
        let models = repo_root().join("models").join("digits");
        let split = load_split(&models).unwrap();
        let fw = FirmwareBlob {
            tag: "w8a8",
            model: &model,
            crc32,
            macs: 1_000_000,
            instructions_per_tick: M4.instructions_per_tick(),
        };
        // What the firmware logs, from the host's logits.
        let lines = |flip: Option<usize>| {
            let mut text = format!("BLOB w8a8 {crc32:08x} 1 f16 10\n");
            let seed = 2024;
            let pattern = Input::Pattern {
                seed,
                height: 64,
                width: 64,
            };
            for input in [Input::Digit(1), pattern] {
                let pixels = soft_host::demo::preprocess(&split.images[1]);
                let mut logits = [0.0f32; 10];
                let mut arena = vec![0u8; 64 << 10];
                match input {
                    Input::Digit(_) => {
                        let mut image = soft_core::ChwImage::new(&pixels, 64, 64).unwrap();
                        model.run(&mut image, &mut arena, Precision::F16, &mut logits, &mut ())
                    }
                    _ => {
                        let mut image = soft_core::TestPattern::new(64, 64, seed);
                        model.run(&mut image, &mut arena, Precision::F16, &mut logits, &mut ())
                    }
                }
                .unwrap();
                let mut bits = logits.map(f32::to_bits);
                if let Some(class) = flip {
                    bits[class] ^= 0x10;
                }
                text += &format!("LOGITS w8a8 {input} 1000 0 10 {}\r\n", hex(&bits));
            }
            DeviceLog::parse(&text).unwrap()
        };
        let good = lines(None);
        let (rows, failures) = compare_blob(&fw, [&good, &good], &split, &models, 1).unwrap();
        assert_eq!(failures, Vec::<String>::new());
        assert_eq!(rows.len(), 2);
        assert!(rows[0].starts_with("| w8a8  | digit:1  "), "{}", rows[0]);
        assert!(rows[0].contains(" 10/10 | "), "{}", rows[0]);
        let cells: Vec<&str> = rows[1].split('|').map(str::trim).collect();
        assert_eq!(cells[2..4], ["pattern:2024:64x64", "-"], "{}", rows[1]);
        assert_eq!(cells[6..9], ["10/10", "40,000", "0.04"], "{}", rows[1]);

        let bad = lines(Some(3));
        let (_, failures) = compare_blob(&fw, [&good, &bad], &split, &models, 2).unwrap();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures[0].contains("1 digits run, expected 2"),
            "{}",
            failures[0]
        );
        assert!(
            failures[1].starts_with("w8a8 digit:1 (UART, line 2): 9/10 logits bit-identical"),
            "{}",
            failures[1]
        );
        assert!(
            failures[1].contains("first: class 3: host "),
            "{}",
            failures[1]
        );
        assert!(
            failures[2].starts_with("w8a8 pattern:2024:64x64 (UART, line 3)"),
            "{}",
            failures[2]
        );

        let other = FirmwareBlob {
            crc32: crc32 ^ 1,
            ..fw
        };
        let e = compare_blob(&other, [&good, &good], &split, &models, 1).unwrap_err();
        assert!(e.to_string().contains("the device ran another blob"), "{e}");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1_234), "1,234");
        assert_eq!(group(113_845_520), "113,845,520");
    }
}
