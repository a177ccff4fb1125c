//! Standard output for a command-line tool that may be piped into `head`: once the
//! reader has gone, further output is dropped and the command finishes its work (a
//! `convert … | head -1` still writes its blob); any other write failure is an error,
//! so a result is never lost with exit 0.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Set once standard output's reader has closed the pipe.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Writes to standard output; see the module notes for what happens when it fails.
pub fn write(args: fmt::Arguments<'_>) -> Result<()> {
    if READER_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    finish(out.write_fmt(args).and_then(|()| out.flush()))
}

/// Writes raw bytes to standard output (an output file named `/dev/stdout`), with the
/// same closed-pipe rule as [`write()`].
pub fn write_bytes(bytes: &[u8]) -> Result<()> {
    if READER_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    finish(out.write_all(bytes).and_then(|()| out.flush()))
}

/// A write's result under the closed-pipe rule.
fn finish(result: std::io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::io("writing", Path::new("standard output"), e)),
        Ok(()) => Ok(()),
    }
}

/// One line for an error message: control characters (newlines in a path or in a
/// file's header text) are escaped, so an error is always exactly one line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `print!` that returns an error instead of panicking: see [`write()`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::write(format_args!($($arg)*))
    };
}

/// `println!` that returns an error instead of panicking: see [`write()`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::console::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_control_characters_only() {
        assert_eq!(one_line("a\nb\r\tc é ±"), "a\\nb\\r\\tc é ±");
        assert_eq!(one_line("plain"), "plain");
    }
}
