//! `soft eval`: a blob's accuracy on labelled data, optionally against another model.

use std::path::{Path, PathBuf};

use soft_core::{Precision, Schedule};

use super::common::{
    blob_metadata, load_blob, native_size, open_model, plural, reference_blob, thread_count,
    Activations, PreprocessArgs,
};
use crate::error::{Error, Result};
use crate::eval::{evaluate, Dataset, ImageFolder, NpyBatch, Options, Report, Tally, TOP_K};
use crate::inference::precision_name;
use crate::io::Output;
use crate::{fail, outln, require, AlignedBlob};

/// Accuracy of a blob on labelled data: an image folder, or a .npy batch with labels.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// The data: a folder in torchvision's ImageFolder layout (DATA/CLASS/IMAGE.png,
    /// .jpg or .jpeg; classes numbered in folder-name order), or an f32 .npy batch of
    /// shape (N,3,H,W), already normalised, with --labels.
    data: PathBuf,
    /// The .npy batch's labels: int64 or int32, shape (N,).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Crop size for the folder's images (default: the size the blob was trained at,
    /// else the model's native size). The folder's images are preprocessed as the blob's
    /// metadata says, each flag below overriding it, and where the blob does not say,
    /// as torchvision's ImageNet evaluation does.
    #[arg(long)]
    image_size: Option<usize>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Token maps in f16 (the default, what a microcontroller runs) or f32.
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Also run this blob, or the checkpoint the model was converted from, with f32
    /// token maps: report top-1 agreement and the worst |logit difference|.
    #[arg(long)]
    against: Option<PathBuf>,
    /// With a checkpoint --against: take `state_dict` even where `state_dict_ema` exists.
    #[arg(long, requires = "against")]
    no_ema: bool,
    /// Write the confusion matrix (rows: true classes, columns: predicted) as an SVG.
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// Evaluate only the first N samples (in class order for a folder).
    #[arg(long)]
    limit: Option<usize>,
    /// Threads (default: every core), each running whole samples. The results do not
    /// depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object: model, data, format ("folder" or "npy"), image_size,
    /// preprocessing (null for npy), activations, threads, samples, skipped_files, top1_correct, top5_correct,
    /// top1_accuracy, top5_accuracy, classes (class, label, samples, top1_correct,
    /// top5_correct, top1_accuracy, top5_accuracy), against (null, or model,
    /// top1_agree, agreement, max_abs_logit_diff), confusion, seconds, samples_per_s.
    #[arg(long)]
    json: bool,
}

/// The data as given on the command line.
enum Data {
    Folder(ImageFolder),
    Npy(NpyBatch),
}

impl Data {
    fn dataset(&self) -> &dyn Dataset {
        match self {
            Data::Folder(f) => f,
            Data::Npy(b) => b,
        }
    }
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let workers = thread_count(args.threads)?;
    let p: Precision = args.activations.into();
    let path = args.model.as_path();
    require!(args.limit != Some(0), Usage, "--limit must be at least 1");
    let inputs = [
        Some(path),
        Some(args.data.as_path()),
        args.labels.as_deref(),
        args.against.as_deref(),
    ];
    let confusion = Output::optional(args.confusion.as_deref(), &inputs)?;
    let blob = load_blob(path)?;
    let model = open_model(&blob, path)?;
    let classes = model.config().num_classes;
    let data_path = args.data.as_path();
    let metadata = blob_metadata(&model, path);
    let (data, (h, w)) = open_data(&args, model.config(), metadata.as_ref())?;
    let against_blob = args
        .against
        .as_deref()
        .map(|a| against(a, model.config(), args.no_ema))
        .transpose()?;
    let against_model = match (&against_blob, &args.against) {
        (Some(b), Some(a)) => Some(open_model(b, a)?),
        _ => None,
    };
    let dataset = data.dataset();
    let options = Options {
        precision: p,
        schedule: Schedule::fast(1),
        workers,
        limit: args.limit,
    };
    let count = dataset.samples().min(args.limit.unwrap_or(usize::MAX));
    let bar = indicatif::ProgressBar::new(count as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} samples, {rate}, {eta} left")
    {
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            },
        ));
    }
    let result = evaluate(&model, against_model.as_ref(), dataset, &options, |_| {
        bar.inc(1)
    });
    bar.finish_and_clear();
    let report = result?;
    // Warnings once the run has succeeded: a failure is one line.
    if let Data::Folder(folder) = &data {
        warn_about(folder, data_path, classes);
    }
    let names = dataset.class_names();
    if let Some(out) = &confusion {
        let title = format!(
            "{} on {}: top-1 {:.2} % of {}",
            path.display(),
            data_path.display(),
            100.0 * report.tally.top1_accuracy(),
            report.tally.samples
        );
        write_confusion(out, &title, &report.tally, names)?;
    }
    let shown = Shown {
        model: path,
        data: data_path,
        format: match data {
            Data::Folder(_) => "folder",
            Data::Npy(_) => "npy",
        },
        size: (h, w),
        precision: p,
        threads: workers,
        skipped: match &data {
            Data::Folder(f) => f.skipped().len(),
            Data::Npy(_) => 0,
        },
        names,
        against: args.against.as_deref(),
        confusion: args.confusion.as_deref(),
        preprocessing: match &data {
            Data::Folder(f) => Some(*f.preprocess()),
            Data::Npy(_) => None,
        },
    };
    if args.json {
        return outln!("{}", shown.json(&report));
    }
    shown.text(&report)
}

/// DATA as an image folder (preprocessed as the flags, else the blob's `metadata`,
/// say) or a `.npy` batch, and the inputs' height and width.
fn open_data(
    args: &Args,
    cfg: &soft_core::ModelConfig,
    metadata: Option<&soft_core::Metadata<'_>>,
) -> Result<(Data, (usize, usize))> {
    let (data_path, classes) = (args.data.as_path(), cfg.num_classes);
    let is_folder = std::fs::metadata(data_path)
        .map_err(|e| Error::io("reading", data_path, e))?
        .is_dir();
    Ok(match (is_folder, &args.labels) {
        (true, Some(_)) => fail!(
            Usage,
            "--labels goes with a .npy batch; an image folder's classes are its subfolders"
        ),
        (true, None) => {
            let flags = args.preprocess.overrides(args.image_size)?;
            let (pre, _) = crate::model_info::preprocess(metadata, &flags, native_size(cfg))?;
            let side = pre.size;
            image_input_side(side)?;
            let folder = ImageFolder::open_with(data_path, pre)?;
            let found = folder.classes().len();
            require!(
                found <= classes,
                Usage,
                "{} has {found} class folders, more than the {classes} classes of {}",
                data_path.display(),
                args.model.display()
            );
            (Data::Folder(folder), (side, side))
        }
        (false, None) => fail!(
            Usage,
            "{} is a file: a .npy batch needs --labels LABELS.npy (int64 or int32, shape (N,))",
            data_path.display()
        ),
        (false, Some(labels)) => {
            require!(
                args.image_size.is_none() && !args.preprocess.any(),
                Usage,
                "--image-size and the preprocessing flags are for an image folder; a .npy \
                 batch is already preprocessed"
            );
            let batch = NpyBatch::open(data_path, labels, classes)?;
            let size = batch.size();
            (Data::Npy(batch), size)
        }
    })
}

/// What the user should know about how a folder was read: fewer classes than the
/// model's (numbered by folder order all the same), files skipped.
fn warn_about(folder: &ImageFolder, path: &Path, classes: usize) {
    let found = folder.classes().len();
    if found < classes {
        super::warn(&format!(
            "{} has {found} class folders for a model of {classes} classes: \
             the i-th folder in name order is taken as class i",
            path.display()
        ));
    }
    if let Some(first) = folder.skipped().first() {
        let n = folder.skipped().len();
        super::warn(&format!(
            "skipped {n} file{} that {} not .png, .jpg or .jpeg ({}{})",
            plural(n),
            if n == 1 { "is" } else { "are" },
            first.display(),
            if n > 1 { ", …" } else { "" }
        ));
    }
}

/// The confusion matrix as an SVG, over the classes that occur (as labels or
/// predictions).
fn write_confusion(
    out: &Output,
    title: &str,
    tally: &Tally,
    names: Option<&[String]>,
) -> Result<()> {
    let axes = tally.confusion_classes();
    let labels: Vec<String> = axes.iter().map(|&c| class_name(names, c)).collect();
    let position = |c: usize| axes.binary_search(&c).unwrap_or(0);
    let cells: Vec<((usize, usize), usize)> = tally
        .confusion_cells()
        .map(|((t, p), n)| ((position(t), position(p)), n))
        .collect();
    out.write(crate::svg::confusion_svg(title, &labels, &cells).as_bytes())
}

/// The image side `image_input` accepts, checked before the folder is listed.
fn image_input_side(side: usize) -> Result<()> {
    require!(
        crate::image_input::CROP_RANGE.contains(&side),
        Usage,
        "--image-size {side} is out of range ({}..={})",
        crate::image_input::CROP_RANGE.start(),
        crate::image_input::CROP_RANGE.end()
    );
    Ok(())
}

/// The model `--against` names: a blob, or the checkpoint of a model of config `cfg`
/// (converted with f32 weights).
fn against(path: &Path, cfg: &soft_core::ModelConfig, no_ema: bool) -> Result<AlignedBlob> {
    let mut magic = [0u8; 8];
    let is_blob = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == soft_core::format::MAGIC;
    if is_blob {
        load_blob(path)
    } else {
        reference_blob(path, cfg, no_ema)
    }
}

/// Class `c`'s name: its folder's, else its number.
fn class_name(names: Option<&[String]>, c: usize) -> String {
    names
        .and_then(|n| n.get(c))
        .cloned()
        .unwrap_or_else(|| format!("class {c}"))
}

/// What the output shows besides the report.
struct Shown<'a> {
    model: &'a Path,
    data: &'a Path,
    format: &'static str,
    size: (usize, usize),
    precision: Precision,
    threads: usize,
    skipped: usize,
    names: Option<&'a [String]>,
    against: Option<&'a Path>,
    confusion: Option<&'a Path>,
    preprocessing: Option<crate::image_input::Preprocess>,
}

impl Shown<'_> {
    fn json(&self, report: &Report) -> serde_json::Value {
        let t = &report.tally;
        let classes: Vec<serde_json::Value> = t
            .per_class()
            .map(|(class, c)| {
                serde_json::json!({
                    "class": class,
                    "label": self.names.and_then(|n| n.get(class)),
                    "samples": c.samples,
                    "top1_correct": c.top1,
                    "top5_correct": c.top5,
                    "top1_accuracy": crate::eval::fraction(c.top1, c.samples),
                    "top5_accuracy": crate::eval::fraction(c.top5, c.samples),
                })
            })
            .collect();
        let against = match (self.against, &t.against) {
            (Some(path), Some(a)) => serde_json::json!({
                "model": path.display().to_string(),
                "top1_agree": a.top1_agree,
                "agreement": crate::eval::fraction(a.top1_agree, a.inputs),
                "max_abs_logit_diff": a.max_error,
            }),
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "model": self.model.display().to_string(),
            "data": self.data.display().to_string(),
            "format": self.format,
            "image_size": [self.size.0, self.size.1],
            "preprocessing": self.preprocessing.as_ref().map(crate::model_info::preprocess_json),
            "activations": precision_name(self.precision),
            "threads": self.threads,
            "samples": t.samples,
            "skipped_files": self.skipped,
            "top1_correct": t.top1,
            "top5_correct": t.top5,
            "top1_accuracy": t.top1_accuracy(),
            "top5_accuracy": t.top5_accuracy(),
            "classes": classes,
            "against": against,
            "confusion": self.confusion.map(|c| c.display().to_string()),
            "seconds": report.seconds,
            "samples_per_s": t.samples as f64 / report.seconds.max(1e-9),
        })
    }

    fn text(&self, report: &Report) -> Result<()> {
        let t = &report.tally;
        let (h, w) = self.size;
        let kind = match self.format {
            "folder" => "images",
            _ => "inputs",
        };
        let groups = t.per_class().count();
        outln!(
            "{} on {}: {} {kind} of {groups} class{} at {h}x{w}, {:?} activations, {} thread{}",
            self.model.display(),
            self.data.display(),
            t.samples,
            if groups == 1 { "" } else { "es" },
            self.precision,
            self.threads,
            plural(self.threads)
        )?;
        if let Some(p) = &self.preprocessing {
            outln!("images: {}", crate::model_info::describe_preprocess(p))?;
        }
        let percent = |part, whole| 100.0 * crate::eval::fraction(part, whole);
        outln!(
            "top-1 accuracy {:6.2} % ({} of {})",
            percent(t.top1, t.samples),
            t.top1,
            t.samples
        )?;
        outln!(
            "top-{TOP_K} accuracy {:6.2} % ({} of {})",
            percent(t.top5, t.samples),
            t.top5,
            t.samples
        )?;
        outln!()?;
        outln!("| class | label | samples | top-1 | top-{TOP_K} |")?;
        outln!("|---|---|---|---|---|")?;
        for (class, c) in t.per_class() {
            let label = self
                .names
                .and_then(|n| n.get(class))
                .map_or("-".to_string(), |l| crate::console::one_line(l));
            outln!(
                "| {class} | {label} | {} | {:.2} % | {:.2} % |",
                c.samples,
                percent(c.top1, c.samples),
                percent(c.top5, c.samples)
            )?;
        }
        outln!()?;
        if let (Some(path), Some(a)) = (self.against, &t.against) {
            outln!(
                "against {} (f32 activations): top-1 agreement {:.2} % ({} of {}), \
                 worst |logit difference| {:.4e}",
                path.display(),
                percent(a.top1_agree, a.inputs),
                a.top1_agree,
                a.inputs,
                a.max_error
            )?;
        }
        if let Some(c) = self.confusion {
            outln!("wrote {}", c.display())?;
        }
        outln!(
            "{} samples in {:.2} s ({:.1} per second), arena {} B per thread",
            t.samples,
            report.seconds,
            t.samples as f64 / report.seconds.max(1e-9),
            report.arena_bytes
        )
    }
}
