//! The `soft` command line: one module per command (its arguments and its `run`), the
//! shared argument types and loaders in `common`, the logic in the library's own modules
//! (`verify`, `inference`, `io`, …) where tests and other tools reach it. `src/main.rs`
//! only calls [`main`].

mod bench;
mod common;
mod completions;
mod convert;
mod crosscheck;
mod demo;
mod eval;
mod export;
mod inspect;
mod plan;
mod run;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{console, out};

#[derive(Parser)]
#[command(
    name = "soft",
    version,
    about = "SOFT (softmax-free transformer) models for microcontrollers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Convert(convert::Args),
    Inspect(inspect::Args),
    Plan(plan::Args),
    Run(run::Args),
    Bench(bench::Args),
    Verify(verify::Args),
    Eval(eval::Args),
    Demo(demo::Args),
    Export(export::Args),
    Crosscheck(crosscheck::Args),
    Completions(completions::Args),
}

/// The `soft` binary: parses the arguments, runs the command, prints any error as one
/// line and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // Help or version: a closed pipe (`soft --help | head -1`) is not an error.
            return match out!("{e}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Err(e) => {
            let text = e.render().to_string();
            report_error(text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Export(args) => export::run(args),
        Command::Crosscheck(args) => crosscheck::run(args),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints one line on standard error (control characters escaped); if standard error
/// itself is gone there is nowhere left to say anything, and the exit code still tells.
pub(crate) fn report_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{}", console::one_line(message));
}

/// A warning on standard error: the command goes on.
pub(crate) fn warn(message: &str) {
    report_error(&format!("warning: {message}"));
}
