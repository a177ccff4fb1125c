//! Output files that never destroy anything: checked before a command does any work,
//! written whole or not at all.
//!
//! - An output that is the same file as one of the command's inputs (same device and
//!   inode, whatever the names) is refused.
//! - A directory, a block device or a symbolic link to nothing is refused with a message
//!   that says so.
//! - A regular file (new or existing) is written to a temporary file beside it and
//!   renamed into place once complete; on failure the old file is untouched and no
//!   temporary remains. The new file gets the mode `File::create` would give: an
//!   existing file's mode, else `0o666` less the umask. It is a new inode, so unlike
//!   `File::create` a read-only file is replaced too, other hard links keep the old
//!   contents, and the owner is whoever runs the command.
//! - A FIFO or character device (`/dev/null`, a named pipe, `>(…)`) is written in place:
//!   renaming over it would replace the node with a regular file.
//! - Standard output and error by name (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/2`)
//!   are the process's own streams, written through its handles: reopening them would
//!   truncate or overwrite a file the shell redirected them to.
//! - A symbolic link is followed: the file it points to is replaced, the link stays.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fail;

/// An output file, checked against the command's inputs before any work is done.
#[derive(Debug, Clone)]
pub struct Output {
    /// The path as the user gave it, for messages.
    shown: PathBuf,
    /// Where the bytes go: for a regular file, its canonical directory and name (a
    /// symbolic link resolved), so two spellings of one new file compare equal.
    target: PathBuf,
    /// How to write it.
    kind: OutputKind,
}

#[derive(Debug, Clone)]
enum OutputKind {
    /// A regular file, new or replaced atomically; `existing` is the file it replaces.
    Replace { existing: Option<Metadata> },
    /// A FIFO or character device, opened and written in place.
    Stream,
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

impl Output {
    /// An optional output (`--logits-out`, `--confusion`) of a command that reads the
    /// given ones of `inputs`: [`Output::new`] when there is a path.
    pub fn optional(path: Option<&Path>, inputs: &[Option<&Path>]) -> Result<Option<Output>> {
        let inputs: Vec<&Path> = inputs.iter().flatten().copied().collect();
        path.map(|p| Output::new(p, &inputs)).transpose()
    }

    /// Checks `path` as an output of a command that reads `inputs` (inputs that do not
    /// exist are ignored: reading them fails later with its own message).
    pub fn new(path: &Path, inputs: &[&Path]) -> Result<Output> {
        let usage = |why: &str| Err(Error::Usage(format!("output {}: {why}", path.display())));
        if path.as_os_str().is_empty() {
            return usage("empty path");
        }
        let output = |target: PathBuf, kind| {
            Ok(Output {
                shown: path.to_path_buf(),
                target,
                kind,
            })
        };
        if let Some(kind) = standard_stream(path) {
            return output(path.to_path_buf(), kind);
        }
        // `metadata` follows symbolic links: the kind of file the bytes would reach.
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(path).is_ok() {
                    return usage("is a symbolic link to nothing; remove it or name a file");
                }
                if names_a_directory(path) {
                    return usage("is a directory; name a file in it");
                }
                let dir = directory_of(path);
                let file = path.file_name().unwrap_or_default();
                return match std::fs::canonicalize(dir) {
                    Ok(dir) if dir.is_dir() => {
                        output(dir.join(file), OutputKind::Replace { existing: None })
                    }
                    _ => usage(&format!("its directory {} does not exist", dir.display())),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return usage(if names_a_directory(path) {
                    "ends in a separator but is not a directory"
                } else {
                    "a part of its directory is not a directory"
                });
            }
            Err(e) => return Err(Error::io("checking", path, e)),
        };
        for input in inputs {
            if let Ok(input_meta) = std::fs::metadata(input) {
                if same_file(&meta, &input_meta) {
                    return usage(&format!(
                        "is the same file as the input {}; writing it would destroy it",
                        input.display()
                    ));
                }
            }
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            usage("is a directory; name a file in it")
        } else if kind.is_file() {
            let target = std::fs::canonicalize(path).map_err(|e| Error::io("checking", path, e))?;
            output(
                target,
                OutputKind::Replace {
                    existing: Some(meta),
                },
            )
        } else if is_stream(&meta) {
            output(path.to_path_buf(), OutputKind::Stream)
        } else {
            usage("is not a regular file, FIFO or character device")
        }
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// Whether this output is the same file as `other` (which must exist).
    pub fn is_same_file_as(&self, other: &Path) -> bool {
        match (std::fs::metadata(&self.target), std::fs::metadata(other)) {
            (Ok(a), Ok(b)) => same_file(&a, &b),
            _ => false,
        }
    }

    /// Writes `bytes` whole: see [`Output::stage`].
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        self.stage(bytes)?.commit()
    }

    /// Writes `bytes` where they cannot be seen yet (a temporary file beside a regular
    /// output); [`Staged::commit`] makes them the output. Dropping a [`Staged`] without
    /// committing it leaves nothing behind, so several outputs can be staged first and
    /// committed only when all are ready.
    pub fn stage(&self, bytes: &[u8]) -> Result<Staged<'_>> {
        let pending = match &self.kind {
            OutputKind::Stream | OutputKind::Stdout | OutputKind::Stderr => {
                Pending::Stream(bytes.to_vec())
            }
            OutputKind::Replace { existing } => {
                let dir = directory_of(&self.target);
                let mut builder = tempfile::Builder::new();
                builder.prefix(".soft-").suffix(".tmp");
                if let Some(mode) = creation_mode(existing.as_ref()) {
                    builder.permissions(mode);
                }
                let mut tmp = builder
                    .tempfile_in(dir)
                    .map_err(|e| Error::io("writing in", dir, e))?;
                tmp.write_all(bytes)
                    .and_then(|()| tmp.as_file().sync_all())
                    .map_err(|e| Error::io("writing", &self.shown, e))?;
                if let Some(meta) = existing {
                    // The umask applied at creation; an existing file keeps its exact mode.
                    tmp.as_file()
                        .set_permissions(meta.permissions())
                        .map_err(|e| Error::io("writing", &self.shown, e))?;
                }
                Pending::Replace(tmp)
            }
        };
        Ok(Staged {
            output: self,
            pending,
        })
    }
}

/// Bytes written for an [`Output`] but not yet in place.
#[derive(Debug)]
pub struct Staged<'a> {
    output: &'a Output,
    pending: Pending,
}

#[derive(Debug)]
enum Pending {
    Replace(tempfile::NamedTempFile),
    Stream(Vec<u8>),
}

impl Staged<'_> {
    /// Puts the bytes in place: renames the temporary file over the output, or writes
    /// the FIFO or device.
    pub fn commit(self) -> Result<()> {
        let out = self.output;
        match self.pending {
            Pending::Replace(tmp) => {
                tmp.persist(&out.target)
                    .map_err(|e| Error::io("creating", &out.shown, e.error))?;
            }
            Pending::Stream(bytes) => match out.kind {
                OutputKind::Stdout => crate::console::write_bytes(&bytes)?,
                OutputKind::Stderr => std::io::stderr()
                    .write_all(&bytes)
                    .map_err(|e| Error::io("writing", &out.shown, e))?,
                _ => {
                    let mut file: File = OpenOptions::new()
                        .write(true)
                        .open(&out.target)
                        .map_err(|e| Error::io("opening", &out.shown, e))?;
                    // Checked as a FIFO or device; if it has become a regular file since,
                    // writing from its start would leave a mix of old and new bytes.
                    let meta = file
                        .metadata()
                        .map_err(|e| Error::io("opening", &out.shown, e))?;
                    if !is_stream(&meta) {
                        fail!(
                            Usage,
                            "output {}: was a FIFO or device, is now something else",
                            out.shown.display()
                        );
                    }
                    file.write_all(&bytes)
                        .and_then(|()| file.flush())
                        .map_err(|e| Error::io("writing", &out.shown, e))?;
                }
            },
        }
        Ok(())
    }
}

/// Checks every output of a command against its inputs and against each other.
pub fn outputs(paths: &[&Path], inputs: &[&Path]) -> Result<Vec<Output>> {
    let mut checked: Vec<Output> = Vec::with_capacity(paths.len());
    for path in paths {
        let output = Output::new(path, inputs)?;
        if let Some(earlier) = checked
            .iter()
            .find(|o| o.target == output.target || output.is_same_file_as(&o.target))
        {
            fail!(
                Usage,
                "outputs {} and {} are the same file",
                earlier.path().display(),
                path.display()
            );
        }
        checked.push(output);
    }
    Ok(checked)
}

/// The process's own standard output or error, where `path` names one of them.
#[cfg(unix)]
fn standard_stream(path: &Path) -> Option<OutputKind> {
    match path.to_str()? {
        "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Some(OutputKind::Stdout),
        "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Some(OutputKind::Stderr),
        _ => None,
    }
}

#[cfg(not(unix))]
fn standard_stream(_: &Path) -> Option<OutputKind> {
    None
}

/// The directory a new file at `path` goes in.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Whether `path` names a directory by its spelling (`dir/`, `.`, `..`, `dir/.`), even
/// where no such directory exists yet.
fn names_a_directory(path: &Path) -> bool {
    let text = path.as_os_str().as_encoded_bytes();
    text.last()
        .is_some_and(|&b| std::path::is_separator(char::from(b)))
        || text == b"."
        || text == b".."
        || text.ends_with(b"/.")
        || text.ends_with(b"/..")
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    // Without inodes, size and times stand in: two distinct files that agree on all
    // three are refused, which errs on the side of not destroying anything.
    a.len() == b.len()
        && a.modified().ok() == b.modified().ok()
        && a.created().ok() == b.created().ok()
}

#[cfg(unix)]
fn is_stream(meta: &Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo() || meta.file_type().is_char_device()
}

#[cfg(not(unix))]
fn is_stream(_: &Metadata) -> bool {
    false
}

/// The mode to create the temporary file with: what `File::create` would pass to
/// `open`, so the umask applies as it would.
#[cfg(unix)]
fn creation_mode(existing: Option<&Metadata>) -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    let mode = existing.map_or(0o666, |m| m.permissions().mode() & 0o7777);
    Some(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn creation_mode(existing: Option<&Metadata>) -> Option<std::fs::Permissions> {
    existing.map(Metadata::permissions)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_whole_files_and_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        Output::new(&p, &[]).unwrap().write(b"hello").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let missing = dir.path().join("no/such/dir/x.bin");
        let e = Output::new(&missing, &[]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // A staged output that is never committed leaves nothing.
        let q = dir.path().join("y.bin");
        drop(Output::new(&q, &[]).unwrap().stage(b"y").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_an_input_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pth");
        std::fs::write(&input, b"weights").unwrap();
        let hard = dir.path().join("hard.pth");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.pth");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        let dotted = dir.path().join(".").join("in.pth");
        for name in [&input, &hard, &soft, &dotted] {
            let e = Output::new(name, &[&input]).unwrap_err();
            assert!(e.to_string().contains("same file as the input"), "{e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        let e = outputs(&[&dir.path().join("a"), &dir.path().join("./a")], &[]).unwrap_err();
        assert!(e.to_string().contains("are the same file"), "{e}");
    }

    #[test]
    fn refuses_directories_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let slash = format!("{}/", dir.path().join("new").display());
        for p in [
            dir.path().to_path_buf(),
            PathBuf::from("."),
            PathBuf::from(".."),
            PathBuf::from(slash),
            dir.path().join("."),
        ] {
            let e = Output::new(&p, &[]).unwrap_err();
            assert!(
                e.to_string().contains("is a directory"),
                "{}: {e}",
                p.display()
            );
        }
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let e = Output::new(&dangling, &[]).unwrap_err();
        assert!(e.to_string().contains("symbolic link to nothing"), "{e}");
    }

    #[test]
    fn modes_are_what_file_create_gives() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        Output::new(&fresh, &[]).unwrap().write(b"a").unwrap();
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        assert_eq!(mode(&fresh), mode(&plain));
        assert_ne!(mode(&fresh), 0o600, "the temporary file's mode leaked");
        // An existing file keeps its mode, even one the umask would not give.
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o640)).unwrap();
        Output::new(&fresh, &[]).unwrap().write(b"b").unwrap();
        assert_eq!(mode(&fresh), 0o640);
        assert_eq!(std::fs::read(&fresh).unwrap(), b"b");
    }

    #[test]
    fn symlinks_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.npy");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.npy");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        Output::new(&link, &[]).unwrap().write(b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn devices_are_written_in_place() {
        let null = Path::new("/dev/null");
        Output::new(null, &[]).unwrap().write(b"discarded").unwrap();
        assert!(!std::fs::metadata(null).unwrap().file_type().is_file());
    }
}
