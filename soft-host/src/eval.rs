//! `soft eval`'s measure of a model on labelled data: top-1 and top-5 accuracy overall
//! and per class, the confusion matrix, and with a second model (run with f32 token
//! maps) the top-1 agreement and worst logit difference.
//!
//! The data is an [`ImageFolder`] (one folder of images per class, as torchvision reads
//! it) or an [`NpyBatch`] (inputs `(N,3,H,W)` and labels `(N,)`), or any other
//! [`Dataset`]: the demo runs its test split through [`evaluate`] too. Samples are read
//! one at a time and spread over worker threads, each running whole samples in its own
//! arena, so memory does not grow with their number and no count depends on how many
//! workers there are.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use soft_core::{argmax, ChwImage, Model, Precision, RunOptions, Schedule};

use crate::error::{Context, Error, Result};
use crate::inference::explain_overflow;
use crate::npy::{Dtype, Rows};
use crate::verify::Agreement;
use crate::{fail, image_input, require};

/// The `k` of top-k accuracy.
pub const TOP_K: usize = 5;

/// One labelled input.
pub struct Sample {
    /// Normalised CHW values.
    pub input: Vec<f32>,
    /// Height and width.
    pub size: (usize, usize),
    /// The true class.
    pub label: usize,
}

/// Labelled inputs, read one at a time from any thread.
pub trait Dataset: Sync {
    /// How many samples there are.
    fn samples(&self) -> usize;
    /// Class names by class index, where the data has them (an [`ImageFolder`]'s
    /// folder names).
    fn class_names(&self) -> Option<&[String]> {
        None
    }
    /// Sample `index` (below [`Dataset::samples`]).
    fn sample(&self, index: usize) -> Result<Sample>;
    /// Sample `index` for an error message: its file, or its place in the batch.
    fn describe(&self, index: usize) -> String {
        format!("sample {index}")
    }
}

/// File extensions an [`ImageFolder`] reads as images, in any case.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// A directory in torchvision's `ImageFolder` layout, `ROOT/CLASS/…/IMAGE.png`, listed
/// as torchvision lists it: every subdirectory of the root (symbolic links followed) is
/// a class, numbered in name order; a class's samples are the images anywhere below its
/// folder, in path order. Files with other extensions are skipped and counted; a class
/// folder without images is an error, as it is in torchvision.
pub struct ImageFolder {
    classes: Vec<String>,
    files: Vec<(PathBuf, usize)>,
    skipped: Vec<PathBuf>,
    preprocess: image_input::Preprocess,
}

impl ImageFolder {
    /// Lists `root`; its images will be resized and centre-cropped to `side × side`
    /// as torchvision's ImageNet evaluation does ([`image_input::load`]).
    pub fn open(root: &Path, side: usize) -> Result<ImageFolder> {
        ImageFolder::open_with(root, image_input::Preprocess::imagenet(side))
    }

    /// Lists `root`; its images will be preprocessed as `preprocess` says
    /// ([`image_input::load_with`]).
    pub fn open_with(root: &Path, preprocess: image_input::Preprocess) -> Result<ImageFolder> {
        let mut class_dirs: Vec<(OsString, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| Error::io("reading", root, e))? {
            let entry = entry.map_err(|e| Error::io("reading", root, e))?;
            let path = entry.path();
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                class_dirs.push((entry.file_name(), path));
            }
        }
        require!(
            !class_dirs.is_empty(),
            Usage,
            "{}: no class folders; an image folder holds one folder of images per class \
             (DATA/CLASS/IMAGE.png)",
            root.display()
        );
        class_dirs.sort();
        let (mut files, mut skipped) = (Vec::new(), Vec::new());
        let mut classes = Vec::with_capacity(class_dirs.len());
        for (class, (name, dir)) in class_dirs.iter().enumerate() {
            let mut found: Vec<(PathBuf, OsString)> = Vec::new();
            walk(dir, &mut vec![], &mut found, &mut skipped)?;
            require!(
                !found.is_empty(),
                Usage,
                "{}: class folder {} holds no .png, .jpg or .jpeg images",
                root.display(),
                name.to_string_lossy()
            );
            // torchvision: `sorted(os.walk(…))`, then each folder's names sorted.
            found.sort_by(|a, b| (a.0.as_os_str(), &a.1).cmp(&(b.0.as_os_str(), &b.1)));
            files.extend(found.into_iter().map(|(d, f)| (d.join(f), class)));
            classes.push(name.to_string_lossy().into_owned());
        }
        skipped.sort();
        Ok(ImageFolder {
            classes,
            files,
            skipped,
            preprocess,
        })
    }

    /// The class names: the folder names in class order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// How each image becomes an input.
    pub fn preprocess(&self) -> &image_input::Preprocess {
        &self.preprocess
    }

    /// Files in the class folders that are not images by their extension, in path order.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }
}

/// Adds the images below `dir` to `found` as (folder, name), other files to `skipped`;
/// `ancestors` are the canonical folders above, so a symbolic link back up is not
/// followed round a loop.
fn walk(
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    found: &mut Vec<(PathBuf, OsString)>,
    skipped: &mut Vec<PathBuf>,
) -> Result<()> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io("reading", dir, e))?;
    if ancestors.contains(&canonical) {
        return Ok(());
    }
    ancestors.push(canonical);
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))? {
        let entry = entry.map_err(|e| Error::io("reading", dir, e))?;
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            walk(&path, ancestors, found, skipped)?;
        } else if is_image_name(&path) {
            found.push((dir.to_path_buf(), entry.file_name()));
        } else {
            skipped.push(path);
        }
    }
    ancestors.pop();
    Ok(())
}

/// Whether `path` ends in one of [`IMAGE_EXTENSIONS`], in any case.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

impl Dataset for ImageFolder {
    fn samples(&self) -> usize {
        self.files.len()
    }

    fn class_names(&self) -> Option<&[String]> {
        Some(&self.classes)
    }

    fn sample(&self, index: usize) -> Result<Sample> {
        let Some((path, label)) = self.files.get(index) else {
            fail!(Usage, "no sample {index} in the image folder");
        };
        Ok(Sample {
            input: image_input::load_with(path, &self.preprocess)?,
            size: (self.preprocess.size, self.preprocess.size),
            label: *label,
        })
    }

    fn describe(&self, index: usize) -> String {
        self.files
            .get(index)
            .map_or_else(|| format!("sample {index}"), |f| f.0.display().to_string())
    }
}

/// A batch of inputs in an f32 `.npy` of shape `(N,3,H,W)`, already normalised, and
/// their labels in an int64 or int32 `.npy` of shape `(N,)`; both read a row at a time.
pub struct NpyBatch {
    inputs: Rows,
    labels: Rows,
    size: (usize, usize),
    path: PathBuf,
}

impl NpyBatch {
    /// Opens both files and checks, before any run, that there is one label per input
    /// and that every label is a class of a model of `classes` classes.
    pub fn open(data: &Path, labels: &Path, classes: usize) -> Result<NpyBatch> {
        let inputs = Rows::open(data, &[Dtype::F32])?;
        let size = match inputs.shape() {
            [_, 3, h, w] => (*h, *w),
            s => fail!(
                Usage,
                "{}: batch shape {s:?}; expected (N,3,H,W)",
                data.display()
            ),
        };
        let label_rows = Rows::open(labels, &[Dtype::I64, Dtype::I32])?;
        require!(
            label_rows.shape() == [inputs.rows()],
            Usage,
            "{}: labels shape {:?}; expected ({},), one per input in {}",
            labels.display(),
            label_rows.shape(),
            inputs.rows(),
            data.display()
        );
        let mut chunk = vec![0i64; 4096];
        for first in (0..inputs.rows()).step_by(chunk.len()) {
            let chunk = &mut chunk[..(inputs.rows() - first).min(4096)];
            label_rows.read_i64(first, chunk)?;
            if let Some((i, l)) = chunk
                .iter()
                .enumerate()
                .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= classes))
            {
                fail!(
                    Usage,
                    "{}: label {l} of sample {} is not a class of the model (0 to {})",
                    labels.display(),
                    first + i,
                    classes.saturating_sub(1)
                );
            }
        }
        Ok(NpyBatch {
            inputs,
            labels: label_rows,
            size,
            path: data.to_path_buf(),
        })
    }

    /// Height and width of the inputs.
    pub fn size(&self) -> (usize, usize) {
        self.size
    }
}

impl Dataset for NpyBatch {
    fn samples(&self) -> usize {
        self.inputs.rows()
    }

    fn sample(&self, index: usize) -> Result<Sample> {
        let mut input = vec![0.0; self.inputs.row_len()];
        self.inputs.read_f32(index, &mut input)?;
        let mut label = [0i64];
        self.labels.read_i64(index, &mut label)?;
        Ok(Sample {
            input,
            size: self.size,
            // Checked when opened: every label is a class.
            label: usize::try_from(label[0]).unwrap_or(usize::MAX),
        })
    }

    fn describe(&self, index: usize) -> String {
        format!("sample {index} of {}", self.path.display())
    }
}

/// Counts for one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCount {
    /// Samples of this class.
    pub samples: usize,
    /// Of them, classified as this class.
    pub top1: usize,
    /// Of them, with this class among the [`TOP_K`] highest logits.
    pub top5: usize,
}

/// What an evaluation counts, sample by sample. Every count is an integer, so the
/// result does not depend on the order the samples are added in.
pub struct Tally {
    /// Samples counted.
    pub samples: usize,
    /// Samples whose highest logit is their label.
    pub top1: usize,
    /// Samples whose label is among their [`TOP_K`] highest logits.
    pub top5: usize,
    per_class: Vec<ClassCount>,
    /// (true class, predicted class) → samples; only pairs that occur, so its size is
    /// bounded by both the samples and the classes squared.
    confusion: BTreeMap<(usize, usize), usize>,
    /// The second model's agreement, if there is one.
    pub against: Option<Agreement>,
}

impl Tally {
    /// Nothing counted yet, for a model of `classes` classes, compared with another
    /// model if `against`.
    pub fn new(classes: usize, against: bool) -> Tally {
        Tally {
            samples: 0,
            top1: 0,
            top5: 0,
            per_class: vec![ClassCount::default(); classes],
            confusion: BTreeMap::new(),
            against: against.then(Agreement::default),
        }
    }

    /// Counts one sample of class `label` with `logits`, and the other model's logits
    /// `against` for the same input. A label that is not a class is not counted.
    pub fn add(&mut self, label: usize, logits: &[f32], against: Option<&[f32]>) {
        let Some(class) = self.per_class.get_mut(label) else {
            return;
        };
        let predicted = argmax(logits);
        let (top1, top5) = (predicted == label, rank(logits, label) < TOP_K);
        class.samples += 1;
        class.top1 += usize::from(top1);
        class.top5 += usize::from(top5);
        self.samples += 1;
        self.top1 += usize::from(top1);
        self.top5 += usize::from(top5);
        *self.confusion.entry((label, predicted)).or_default() += 1;
        if let (Some(agreement), Some(other)) = (&mut self.against, against) {
            agreement.add(logits, other);
        }
    }

    /// The fraction of samples classified right.
    pub fn top1_accuracy(&self) -> f64 {
        fraction(self.top1, self.samples)
    }

    /// The fraction of samples with their label among the [`TOP_K`] highest logits.
    pub fn top5_accuracy(&self) -> f64 {
        fraction(self.top5, self.samples)
    }

    /// Each class that has samples, in class order, with its counts.
    pub fn per_class(&self) -> impl Iterator<Item = (usize, ClassCount)> + '_ {
        self.per_class
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| c.samples > 0)
    }

    /// Samples of class `truth` classified as `predicted`.
    pub fn confusion(&self, truth: usize, predicted: usize) -> usize {
        self.confusion
            .get(&(truth, predicted))
            .copied()
            .unwrap_or(0)
    }

    /// The confusion matrix's non-zero cells: ((true class, predicted class), samples),
    /// row by row.
    pub fn confusion_cells(&self) -> impl Iterator<Item = ((usize, usize), usize)> + '_ {
        self.confusion.iter().map(|(&k, &v)| (k, v))
    }

    /// The classes the confusion matrix shows, in order: every class with samples and
    /// every class predicted.
    pub fn confusion_classes(&self) -> Vec<usize> {
        let mut classes: Vec<usize> = self.confusion.keys().flat_map(|&(t, p)| [t, p]).collect();
        classes.sort_unstable();
        classes.dedup();
        classes
    }
}

/// `part / whole`, 0 for nothing.
pub fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Where class `class` ranks by logit (0: highest), ties going to the lower class as
/// they do in [`argmax`]; the number of classes if there is no such class.
pub fn rank(logits: &[f32], class: usize) -> usize {
    let Some(&x) = logits.get(class) else {
        return logits.len();
    };
    logits
        .iter()
        .enumerate()
        .filter(|&(j, &y)| y > x || (y == x && j < class))
        .count()
}

/// How to run an evaluation.
#[derive(Clone, Copy)]
pub struct Options {
    /// The evaluated model's token maps (the model `against` always runs f32).
    pub precision: Precision,
    /// Each worker's schedule: `Schedule::fast(1)` for `soft eval`, whole maps on one
    /// thread; `Schedule::COMPACT` for the demo, what a microcontroller runs.
    pub schedule: Schedule,
    /// Worker threads (at most one per sample is started).
    pub workers: usize,
    /// Evaluate only the first this many samples.
    pub limit: Option<usize>,
}

/// One sample's result, as [`evaluate`] shows it to its caller.
pub struct Outcome {
    /// The sample's index in the data.
    pub index: usize,
    /// Its true class.
    pub label: usize,
    /// The model's logits.
    pub logits: Vec<f32>,
    /// The other model's logits, with `against`.
    pub against: Option<Vec<f32>>,
}

/// An evaluation's result.
pub struct Report {
    /// The counts.
    pub tally: Tally,
    /// Wall-clock seconds for all the samples.
    pub seconds: f64,
    /// The evaluated model's arena, per worker (the largest any sample needed).
    pub arena_bytes: usize,
    /// Worker threads that ran.
    pub workers: usize,
}

/// Runs the first `options.limit` samples of `data` (all by default) through `model`,
/// and through `against` with f32 token maps if given, on `options.workers` threads;
/// shows each sample's [`Outcome`] to `observe` on the calling thread, in the order
/// they finish. Counts do not depend on the number of workers, and nor does the error
/// when samples fail: it is the first failing sample's.
pub fn evaluate(
    model: &Model<'_>,
    against: Option<&Model<'_>>,
    data: &dyn Dataset,
    options: &Options,
    mut observe: impl FnMut(&Outcome),
) -> Result<Report> {
    let classes = model.config().num_classes;
    if let Some(other) = against {
        require!(
            other.config().num_classes == classes,
            Usage,
            "the model has {classes} classes, the one it is compared against {}",
            other.config().num_classes
        );
    }
    let count = data.samples().min(options.limit.unwrap_or(usize::MAX));
    require!(count > 0, Usage, "no samples to evaluate");
    require!(
        options.workers > 0,
        Usage,
        "evaluation needs at least 1 thread"
    );
    let workers = options.workers.min(count);
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let mut tally = Tally::new(classes, against.is_some());
    let mut first_error: Option<(usize, Error)> = None;
    let start = Instant::now();
    let peaks: Vec<Option<usize>> = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<(usize, Result<Outcome>)>(2 * workers);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    let mut worker = Worker {
                        model,
                        against,
                        options: RunOptions::new(options.precision).with_schedule(options.schedule),
                        arena: Vec::new(),
                        peak: 0,
                    };
                    // Indices are taken in increasing order and a failure stops only
                    // new ones: every sample before the first failure still runs.
                    while !stop.load(Ordering::Relaxed) {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            break;
                        }
                        let result = worker.run(data, index);
                        let failed = result.is_err();
                        if tx.send((index, result)).is_err() || failed {
                            break;
                        }
                    }
                    worker.peak
                })
            })
            .collect();
        drop(tx);
        for (index, result) in rx {
            match result {
                Ok(outcome) => {
                    tally.add(outcome.label, &outcome.logits, outcome.against.as_deref());
                    observe(&outcome);
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    if first_error.as_ref().is_none_or(|(at, _)| index < *at) {
                        first_error = Some((index, e));
                    }
                }
            }
        }
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    require!(
        peaks.iter().all(Option::is_some) && tally.samples == count,
        Check,
        "an evaluation thread stopped: {} of {count} samples counted",
        tally.samples
    );
    Ok(Report {
        tally,
        seconds: start.elapsed().as_secs_f64(),
        arena_bytes: peaks.into_iter().flatten().max().unwrap_or(0),
        workers,
    })
}

/// One worker thread: the models, and an arena that grows to the largest plan.
struct Worker<'m, 'b> {
    model: &'m Model<'b>,
    against: Option<&'m Model<'b>>,
    options: RunOptions<'static>,
    arena: Vec<u8>,
    peak: usize,
}

impl Worker<'_, '_> {
    fn run(&mut self, data: &dyn Dataset, index: usize) -> Result<Outcome> {
        let sample = data.sample(index)?;
        let classes = self.model.config().num_classes;
        require!(
            sample.label < classes,
            Usage,
            "{}: label {} is not a class of the model (0 to {})",
            data.describe(index),
            sample.label,
            classes.saturating_sub(1)
        );
        let (logits, peak) = self
            .infer(self.model, self.options, &sample)
            .with_context(|| data.describe(index))?;
        self.peak = self.peak.max(peak);
        let against = match self.against {
            Some(other) => {
                let options = RunOptions {
                    precision: Precision::F32,
                    ..self.options
                };
                let (logits, _) = self.infer(other, options, &sample).with_context(|| {
                    format!("{}, the model compared against", data.describe(index))
                })?;
                Some(logits)
            }
            None => None,
        };
        Ok(Outcome {
            index,
            label: sample.label,
            logits,
            against,
        })
    }

    /// Logits and arena high-water mark of one run, checked against the plan.
    fn infer(
        &mut self,
        model: &Model<'_>,
        options: RunOptions<'_>,
        sample: &Sample,
    ) -> Result<(Vec<f32>, usize)> {
        let (h, w) = sample.size;
        let plan = model.plan_with(h, w, &options)?;
        let need = plan.peak_bytes + soft_core::ARENA_ALIGN;
        if self.arena.len() < need {
            self.arena.resize(need, 0);
        }
        let mut logits = vec![0.0; model.config().num_classes];
        let mut image = ChwImage::new(&sample.input, h, w)?;
        let report = explain_overflow(
            model.run_with(&options, &mut image, &mut self.arena, &mut logits, &mut ()),
            options.precision,
        )?;
        require!(
            report.peak_bytes == plan.peak_bytes,
            Check,
            "arena use {} B differs from the plan's {} B",
            report.peak_bytes,
            plan.peak_bytes
        );
        Ok((logits, plan.peak_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_breaks_ties_as_argmax_does() {
        let logits = [1.0, 3.0, 3.0, -2.0, 0.5];
        assert_eq!(argmax(&logits), 1);
        assert_eq!(rank(&logits, 1), 0);
        assert_eq!(rank(&logits, 2), 1);
        assert_eq!(rank(&logits, 0), 2);
        assert_eq!(rank(&logits, 4), 3);
        assert_eq!(rank(&logits, 3), 4);
        assert_eq!(rank(&logits, 5), 5, "no such class");
        for c in 0..logits.len() {
            assert_eq!(rank(&logits, c) == 0, argmax(&logits) == c);
        }
    }

    /// Logits with class `order[0]` highest, then `order[1]`, …, over 8 classes.
    fn ranked(order: &[usize]) -> Vec<f32> {
        let mut logits = vec![-10.0; 8];
        for (r, &c) in order.iter().enumerate() {
            logits[c] = 5.0 - r as f32;
        }
        logits
    }

    #[test]
    fn top1_top5_per_class_and_confusion_add_up() {
        let mut t = Tally::new(8, false);
        // Class 0: right; class 0: second; class 1: sixth (outside the top 5); class 2:
        // fifth (inside); class 2: right.
        t.add(0, &ranked(&[0, 1]), None);
        t.add(0, &ranked(&[3, 0]), None);
        t.add(1, &ranked(&[2, 3, 4, 5, 6, 1]), None);
        t.add(2, &ranked(&[7, 6, 5, 4, 2]), None);
        t.add(2, &ranked(&[2]), None);
        assert_eq!((t.samples, t.top1, t.top5), (5, 2, 4));
        assert_eq!(t.top1_accuracy(), 0.4);
        assert_eq!(t.top5_accuracy(), 0.8);
        let per_class: Vec<_> = t.per_class().collect();
        let count = |samples, top1, top5| ClassCount {
            samples,
            top1,
            top5,
        };
        assert_eq!(
            per_class,
            [
                (0, count(2, 1, 2)),
                (1, count(1, 0, 0)),
                (2, count(2, 1, 2))
            ]
        );
        assert_eq!(t.confusion(0, 0), 1);
        assert_eq!(t.confusion(0, 3), 1);
        assert_eq!(t.confusion(1, 2), 1);
        assert_eq!(t.confusion(2, 7), 1);
        assert_eq!(t.confusion(2, 2), 1);
        assert_eq!(t.confusion(3, 0), 0);
        assert_eq!(t.confusion_cells().map(|(_, n)| n).sum::<usize>(), 5);
        assert_eq!(t.confusion_classes(), [0, 1, 2, 3, 7]);
        // Rows and the diagonal give back the per-class counts.
        for (class, c) in t.per_class() {
            let row: usize = t
                .confusion_cells()
                .filter(|((truth, _), _)| *truth == class)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(row, c.samples);
            assert_eq!(t.confusion(class, class), c.top1);
        }
        // A label that is not a class is not counted.
        t.add(8, &ranked(&[0]), None);
        assert_eq!(t.samples, 5);
        assert!(t.against.is_none());
    }

    #[test]
    fn fewer_than_five_classes_make_every_sample_a_top5_hit() {
        let mut t = Tally::new(3, false);
        t.add(2, &[3.0, 2.0, 1.0], None);
        assert_eq!((t.top1, t.top5), (0, 1));
        assert_eq!(Tally::new(3, false).top1_accuracy(), 0.0, "no samples");
    }

    #[test]
    fn agreement_counts_top1_and_the_worst_difference() {
        let mut t = Tally::new(3, true);
        t.add(0, &[1.0, 0.0, 0.0], Some(&[1.25, 0.0, 0.0]));
        t.add(1, &[1.0, 0.0, 0.0], Some(&[0.0, 0.5, 0.0]));
        let a = t.against.as_ref().unwrap();
        assert_eq!((a.inputs, a.top1_agree), (2, 1));
        assert_eq!(a.max_error, 1.0);
        // No second model's logits: nothing to compare.
        t.add(2, &[0.0, 0.0, 1.0], None);
        assert_eq!(t.against.as_ref().unwrap().inputs, 2);
    }

    /// A dataset of `n` synthetic 64×64 samples, labelled `i % 10`, failing at `fail`.
    struct Synthetic {
        n: usize,
        fail: Vec<usize>,
    }

    impl Dataset for Synthetic {
        fn samples(&self) -> usize {
            self.n
        }

        fn sample(&self, index: usize) -> Result<Sample> {
            require!(!self.fail.contains(&index), Usage, "sample {index} fails");
            Ok(Sample {
                input: crate::inference::calibration_input(64, index as u64 + 1),
                size: (64, 64),
                label: index % 10,
            })
        }
    }

    #[test]
    fn results_and_errors_do_not_depend_on_the_workers() {
        let blob = crate::testing::synthetic_blob(
            &crate::testing::micro_config(),
            1,
            crate::WeightDtype::F16,
        );
        let model = Model::from_blob(blob.as_bytes()).unwrap();
        let data = Synthetic { n: 7, fail: vec![] };
        let run = |workers, limit, data: &Synthetic| {
            let options = Options {
                precision: Precision::F16,
                schedule: Schedule::fast(1),
                workers,
                limit,
            };
            let mut seen = vec![None; data.n];
            let report = evaluate(&model, Some(&model), data, &options, |o| {
                seen[o.index] = Some(o.logits.clone());
            })?;
            Ok::<_, Error>((report, seen))
        };
        let (one, logits_one) = run(1, None, &data).unwrap();
        let (three, logits_three) = run(3, None, &data).unwrap();
        assert_eq!(logits_one, logits_three);
        assert!(logits_one.iter().all(Option::is_some));
        let (a, b) = (&one.tally, &three.tally);
        assert_eq!((a.samples, a.top1, a.top5), (b.samples, b.top1, b.top5));
        assert_eq!(
            a.per_class().collect::<Vec<_>>(),
            b.per_class().collect::<Vec<_>>()
        );
        assert_eq!(
            a.confusion_cells().collect::<Vec<_>>(),
            b.confusion_cells().collect::<Vec<_>>()
        );
        let (x, y) = (a.against.as_ref().unwrap(), b.against.as_ref().unwrap());
        assert_eq!((x.top1_agree, x.max_error), (y.top1_agree, y.max_error));
        assert_eq!(a.samples, 7);
        assert_eq!((one.workers, three.workers), (1, 3));
        // The model against itself with f32 maps: close, not the same bits.
        assert_eq!(x.inputs, 7);
        assert!(x.max_error > 0.0 && x.max_error < 0.1, "{}", x.max_error);
        // The first failing sample is the one reported, however many workers.
        let failing = Synthetic {
            n: 7,
            fail: vec![5, 2, 6],
        };
        for workers in [1, 2, 3, 7] {
            let e = run(workers, None, &failing).err().unwrap();
            assert_eq!(e.to_string(), "sample 2 fails", "{workers} workers");
        }
        // --limit stops before the failures.
        assert_eq!(run(2, Some(2), &failing).unwrap().0.tally.samples, 2);
        let e = run(2, Some(0), &data).err().unwrap();
        assert!(e.to_string().contains("no samples"), "{e}");
    }
}
