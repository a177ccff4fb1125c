//! The one error type of `soft-host`: what kind of input was bad, with a message that
//! names the file, tensor or byte, and the chain of what was being done at the time.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong reading, converting or running a model on the host.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, written or created.
    Io {
        /// What was being done: "reading", "writing", "creating".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A checkpoint file is malformed: its zip, pickle or safetensors structure, or a tensor
    /// record in it.
    Checkpoint(String),
    /// A well-formed checkpoint is not the model asked for: missing, unexpected, misshapen
    /// or non-finite tensors, or options that contradict the shapes.
    Architecture(String),
    /// An `.npy` array is malformed or has the wrong shape.
    Npy(String),
    /// An image could not be decoded or does not fit.
    Image(String),
    /// The engine refused the model or the input.
    Engine(soft_core::Error),
    /// A model fell short of what was required of it: the demo's accuracy floors,
    /// `verify`'s agreement thresholds.
    Check(String),
    /// Command-line arguments that cannot work together.
    Usage(String),
    /// A device log (what `soft crosscheck` reads) is malformed or incomplete.
    DeviceLog(String),
    /// `source`, which happened while doing `context`.
    Context {
        /// What was being done.
        context: String,
        /// What went wrong.
        source: Box<Error>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The innermost error, past every [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                action,
                path,
                source,
            } => write!(f, "{action} {}: {source}", path.display()),
            Error::Checkpoint(m) | Error::Architecture(m) | Error::Npy(m) | Error::Image(m) => {
                f.write_str(m)
            }
            Error::Engine(e) => write!(f, "{e}"),
            Error::Check(m) | Error::Usage(m) | Error::DeviceLog(m) => f.write_str(m),
            Error::Context { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<soft_core::Error> for Error {
    fn from(e: soft_core::Error) -> Self {
        Error::Engine(e)
    }
}

/// Adds what was being done to an error, as it travels up.
pub trait Context<T> {
    /// Wraps the error in [`Error::Context`].
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// Like [`Context::context`], building the message only on error.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context().to_string(),
            source: Box::new(e.into()),
        })
    }
}

/// Turns a missing value, or another library's error, into an [`Error`] of a given kind.
pub trait OrFail<T> {
    /// `kind(message)`, with the foreign error's text appended if there is one.
    fn or_fail(self, kind: fn(String) -> Error, message: impl fmt::Display) -> Result<T>;
    /// Like [`OrFail::or_fail`], building the message only on failure.
    fn or_fail_with<C: fmt::Display>(
        self,
        kind: fn(String) -> Error,
        message: impl FnOnce() -> C,
    ) -> Result<T>;
}

impl<T> OrFail<T> for Option<T> {
    fn or_fail(self, kind: fn(String) -> Error, message: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| kind(message.to_string()))
    }

    fn or_fail_with<C: fmt::Display>(
        self,
        kind: fn(String) -> Error,
        message: impl FnOnce() -> C,
    ) -> Result<T> {
        self.ok_or_else(|| kind(message().to_string()))
    }
}

impl<T, E: fmt::Display> OrFail<T> for std::result::Result<T, E> {
    fn or_fail(self, kind: fn(String) -> Error, message: impl fmt::Display) -> Result<T> {
        self.map_err(|e| kind(format!("{message}: {e}")))
    }

    fn or_fail_with<C: fmt::Display>(
        self,
        kind: fn(String) -> Error,
        message: impl FnOnce() -> C,
    ) -> Result<T> {
        self.map_err(|e| kind(format!("{}: {e}", message())))
    }
}

/// `return Err(Error::$kind(format!(...)))`.
#[doc(hidden)]
#[macro_export]
macro_rules! fail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::$kind(format!($($arg)*)))
    };
}

/// `fail!` unless the condition holds.
#[doc(hidden)]
#[macro_export]
macro_rules! require {
    ($cond:expr, $kind:ident, $($arg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            $crate::fail!($kind, $($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_and_root() {
        let inner: Result<()> = Err(Error::Npy("bad header".into()));
        let e = inner.context("reading a.npy").unwrap_err();
        assert_eq!(e.to_string(), "reading a.npy: bad header");
        assert!(matches!(e.root(), Error::Npy(_)));
        let io = Error::io(
            "writing",
            Path::new("/x/y"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(io.to_string().starts_with("writing /x/y: "));
        let core: Error = soft_core::Error::BadMagic.into();
        assert!(matches!(core, Error::Engine(soft_core::Error::BadMagic)));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_variant() {
        let missing = Path::new("/nonexistent/soft/x.pth");
        let e = crate::checkpoint::read_checkpoint(missing, crate::pth::Prefer::Ema).unwrap_err();
        assert!(
            matches!(
                e.root(),
                Error::Io {
                    action: "reading",
                    ..
                }
            ),
            "{e}"
        );
        let e = crate::pickle::parse(b"\x80\x02\xff").unwrap_err();
        assert!(matches!(e.root(), Error::Checkpoint(_)), "{e}");
        let e = crate::npy::parse(b"not an array").unwrap_err();
        assert!(matches!(e.root(), Error::Npy(_)), "{e}");
        let cfg = soft_core::ModelConfig::preset("soft_tiny").unwrap();
        let e =
            crate::build_blob(&crate::TensorMap::new(), &cfg, crate::WeightDtype::F32).unwrap_err();
        assert!(matches!(e.root(), Error::Architecture(_)), "{e}");
    }
}
