//! `soft demo`: the bundled digits model converted, run over its test split, checked.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::{out, outln};

/// The demo: convert the bundled digits model to f32, f16, int8 and W8A8, run its test
/// split.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with soft_digits.pth and the test split.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Where to write the blobs.
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    demo(
        args.models.unwrap_or_else(crate::demo::default_dir),
        &args.out,
    )
}

fn demo(dir: PathBuf, out: &Path) -> Result<()> {
    use crate::demo;
    let outputs = demo::blob_outputs(&dir, out)?;
    let images = demo::load_split(&dir)?.images.len();
    let bar = indicatif::ProgressBar::new((demo::CONFIGURATIONS.len() * images) as u64);
    let rows = demo::evaluate(&dir, || bar.inc(1))?;
    bar.finish_and_clear();
    out!("{}", demo::table(&rows, images))?;
    demo::write_blobs(&rows, &outputs)?;
    for o in &outputs {
        outln!("wrote {}", o.path().display())?;
    }
    demo::check(&rows)?;
    outln!(
        "all accuracy floors met (f32 >= 97 %, f16 = f32 on >= 99.5 %, int8 within 0.5 \
         points, w8a8 within 0.5 points and = f32 on >= 99 %)"
    )?;
    Ok(())
}
