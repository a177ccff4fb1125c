//! `soft verify`: a blob against the f32 engine built from its checkpoint, failing below thresholds.

use std::path::PathBuf;

use soft_core::Precision;

use super::common::{load_blob, native_size, open_model, reference_blob, threads_arg, Activations};
use crate::error::{Error, Result};
use crate::inference::{calibration_input, infer, precision_name, read_input_npy};
use crate::verify::{coarsest_format, Agreement, ThresholdOverrides, Thresholds};
use crate::{outln, require};

/// Compare a blob against the f32 engine built from its reference checkpoint; exit 1
/// below the thresholds.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// The checkpoint it was converted from.
    #[arg(long)]
    reference: PathBuf,
    /// Random inputs to compare on [default: 8].
    #[arg(long, conflicts_with = "input_npy")]
    inputs: Option<usize>,
    /// Compare on these .npy inputs instead of random ones.
    #[arg(long)]
    input_npy: Vec<PathBuf>,
    /// The blob's token maps in f16 or f32 (the reference always runs f32).
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Take `state_dict` even where `state_dict_ema` exists.
    #[arg(long)]
    no_ema: bool,
    /// Fail if any logit differs from the reference's by more than this fraction of
    /// the reference's largest |logit| [default: 1e-3 for f32 weights and
    /// activations, 0.05 with f16, 0.25 with int8].
    #[arg(long)]
    max_relative_error: Option<f32>,
    /// Fail if the logit vectors' cosine similarity falls below this on any input
    /// [default: 0.99999 for f32, 0.999 with f16, 0.99 with int8].
    #[arg(long, allow_negative_numbers = true)]
    min_cosine: Option<f64>,
    /// Fail if the top-1 class agrees with the reference's on fewer than this
    /// fraction of the inputs [default: 1 for f32, 0.9 with f16, 0.75 with int8].
    #[arg(long)]
    min_agreement: Option<f64>,
    /// Print one JSON object (model, reference, inputs, max_abs_error,
    /// max_relative_error, min_cosine, top1_agree, thresholds, passed, failures); still
    /// exit 1 below the thresholds.
    #[arg(long)]
    json: bool,
}

/// Random inputs `verify` compares on by default.
const VERIFY_INPUTS: usize = 8;

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let (path, reference, npys) = (
        args.model.as_path(),
        args.reference.as_path(),
        &args.input_npy,
    );
    let (n, p, no_ema, json): (_, Precision, _, _) =
        (args.inputs, args.activations.into(), args.no_ema, args.json);
    let thresholds = &ThresholdOverrides {
        max_relative_error: args.max_relative_error,
        min_cosine: args.min_cosine,
        min_agreement: args.min_agreement,
    };
    let n = n.unwrap_or(VERIFY_INPUTS);
    require!(
        !npys.is_empty() || n > 0,
        Usage,
        "--inputs must be at least 1"
    );
    let threads = threads_arg(None)?;
    let blob = load_blob(path)?;
    let model = open_model(&blob, path)?;
    let thresholds = Thresholds::default_for(coarsest_format(model.blob(), p)?).with(thresholds)?;
    let cfg = *model.config();
    let ref_blob = reference_blob(reference, &cfg, no_ema)?;
    let ref_model = open_model(&ref_blob, reference)?;
    let side = native_size(&cfg);
    let count = if npys.is_empty() { n } else { npys.len() };
    // One input at a time: memory does not grow with the number of inputs.
    let input = |i: usize| -> Result<(Vec<f32>, usize, usize)> {
        match npys.get(i) {
            Some(file) => read_input_npy(file),
            None => Ok((calibration_input(side, i as u64 + 1), side, side)),
        }
    };
    let bar = indicatif::ProgressBar::new(count as u64);
    let mut agreement = Agreement::default();
    for i in 0..count {
        let (x, h, w) = input(i)?;
        let (want, ..) = infer(&ref_model, &x, (h, w), Precision::F32, &threads, &mut ())?;
        let (got, ..) = infer(&model, &x, (h, w), p, &threads, &mut ())?;
        agreement.add(&got, &want);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let a = &agreement;
    let failures = a.failures(&thresholds);
    let verdict = || match failures.is_empty() {
        true => Ok(()),
        false => Err(Error::Check(format!(
            "{} does not match {}: {}",
            path.display(),
            reference.display(),
            failures.join("; ")
        ))),
    };
    if json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "reference": reference.display().to_string(),
            "activations": precision_name(p),
            "inputs": a.inputs,
            "max_abs_error": a.max_error,
            "max_relative_error": a.max_relative,
            "min_cosine": a.min_cosine,
            "top1_agree": a.top1_agree,
            "thresholds": {
                "max_relative_error": thresholds.max_relative_error,
                "min_cosine": thresholds.min_cosine,
                "min_agreement": thresholds.min_agreement,
            },
            "passed": failures.is_empty(),
            "failures": failures,
        });
        outln!("{v}")?;
        return verdict();
    }
    outln!(
        "{} against f32 weights and activations from {} on {} inputs:",
        path.display(),
        reference.display(),
        a.inputs
    )?;
    outln!(
        "  max |logit error| {:.4e}, relative to max |logit| {:.4e}",
        a.max_error,
        a.max_relative
    )?;
    outln!("  min cosine similarity {:.6}", a.min_cosine)?;
    outln!("  top-1 agreement {}/{}", a.top1_agree, a.inputs)?;
    verdict()?;
    outln!(
        "  passed: relative error <= {}, cosine >= {}, top-1 agreement >= {}",
        thresholds.max_relative_error,
        thresholds.min_cosine,
        thresholds.min_agreement
    )?;
    Ok(())
}
