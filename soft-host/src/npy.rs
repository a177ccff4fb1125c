//! Minimal `.npy` reading and writing: little-endian f32 arrays whole ([`read`]), and
//! f32, int32 and int64 arrays one row at a time ([`Rows`]), so that a batch of any size
//! is read in constant memory.
//!
//! The header is a Python dict literal. It is parsed with a small strict grammar (see
//! [`parse_header`]) rather than matched as text, so that every spacing, quoting and key
//! order numpy accepts means the same thing here, and anything else is refused.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Context, Error, OrFail, Result};
use crate::{fail, require};

/// An f32 array.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// The `.npy` magic string.
const MAGIC: &[u8] = b"\x93NUMPY";

/// numpy's own reader refuses longer headers by default (`max_header_size`), as a guard
/// against hostile files; the headers it writes for any array here are a few hundred bytes.
pub const MAX_HEADER_LEN: usize = 10_000;

/// How much header text an error message quotes.
const QUOTE_CHARS: usize = 48;

/// Reads an `.npy` file holding `<f4` values (C or Fortran order).
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `.npy` bytes (versions 1.0, 2.0 and 3.0) holding `<f4` values.
pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    require!(bytes.starts_with(MAGIC), Npy, "not an .npy file");
    let (header, body) = split_header(bytes)?;
    let header = parse_header(header)?;
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .or_fail_with(Error::Npy, || {
            format!(".npy shape {:?} has too many elements", header.shape)
        })?;
    let data_len = count.checked_mul(4).or_fail_with(Error::Npy, || {
        format!(".npy shape {:?} has too many bytes", header.shape)
    })?;
    require!(
        body.len() == data_len,
        Npy,
        ".npy holds {} bytes of data, shape {:?} needs {data_len}",
        body.len(),
        header.shape
    );
    let data: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let data = if header.fortran_order {
        fortran_to_c(&data, &header.shape)
    } else {
        data
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// Splits a file that starts with [`MAGIC`] into its header text and its data.
///
/// Version 1.0 stores the header length in a u16, 2.0 and 3.0 in a u32; 3.0 allows UTF-8
/// where the others say latin-1. The header grammar is ASCII, so both must be UTF-8 here.
fn split_header(bytes: &[u8]) -> Result<(&str, &[u8])> {
    let version = bytes
        .get(6..8)
        .or_fail(Error::Npy, "truncated .npy preamble")?;
    let (len_field, start): (_, usize) = match version {
        [1, 0] => (bytes.get(8..10), 10),
        [2, 0] | [3, 0] => (bytes.get(8..12), 12),
        [major, minor] => fail!(Npy, "unsupported .npy version {major}.{minor}"),
        _ => fail!(Npy, "truncated .npy preamble"),
    };
    let header_len = match *len_field.or_fail(Error::Npy, "truncated .npy preamble")? {
        [a, b] => usize::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => usize::try_from(u32::from_le_bytes([a, b, c, d])).unwrap_or(usize::MAX),
        _ => fail!(Npy, "truncated .npy preamble"),
    };
    require!(
        header_len <= MAX_HEADER_LEN,
        Npy,
        ".npy header is {header_len} bytes, more than the {MAX_HEADER_LEN} allowed"
    );
    let end = start
        .checked_add(header_len)
        .or_fail(Error::Npy, "truncated .npy header")?;
    let header = bytes
        .get(start..end)
        .or_fail(Error::Npy, "truncated .npy header")?;
    let body = bytes.get(end..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|e| {
        Error::Npy(format!(
            ".npy header is not UTF-8 text (bad byte at {})",
            e.valid_up_to()
        ))
    })?;
    Ok((header, body))
}

/// What an `.npy` header says about the data after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// True when the data is column-major (first index fastest).
    pub fortran_order: bool,
    /// The array's dimensions.
    pub shape: Vec<usize>,
}

/// The only element type supported: little-endian f32.
const F32_DESCR: &str = "<f4";

/// Parses the header dict exactly as numpy writes it, accepting what Python's literal
/// syntax allows around it:
///
/// ```text
/// header := [ \t]* '{' ws entry (ws ',' ws entry)* (ws ',')? ws '}' ws
/// entry  := string ws ':' ws value
/// value  := string | 'True' | 'False' | '(' ws ')' | '(' ws int ws ',' ws ')'
///         | '(' ws int (ws ',' ws int)+ (ws ',')? ws ')'
/// string := "'" chars "'" | '"' chars '"'      (no backslash escapes)
/// int    := '0' | [1-9][0-9]*                  (Python refuses leading zeros)
/// ```
///
/// The keys must be exactly `descr`, `fortran_order` and `shape`, each once, in any order;
/// `descr` must be `<f4`. Trailing whitespace (numpy pads with spaces and a newline) is
/// allowed; anything else after the closing brace is not.
pub fn parse_header(text: &str) -> Result<Header> {
    let (descr, header) = parse_header_any(text)?;
    require!(
        descr == F32_DESCR,
        Npy,
        "only little-endian f32 ('{F32_DESCR}') .npy is supported, not {descr:?}"
    );
    Ok(header)
}

/// [`parse_header`] for any `descr` string: the descr and the header.
fn parse_header_any(text: &str) -> Result<(&str, Header)> {
    let mut p = HeaderParser { text, at: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    // Python strips leading spaces and tabs; a newline there would be an indentation error.
    while matches!(p.peek(), Some(b' ' | b'\t')) {
        p.at += 1;
    }
    p.expect(b'{')?;
    loop {
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        let key_at = p.at;
        let key = p.string()?;
        let slot = match key {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            other => return Err(p.error_at(key_at, &format!("unexpected key {other:?}"))),
        };
        if slot.is_some() {
            return Err(p.error_at(key_at, &format!("key {key:?} given twice")));
        }
        p.skip_space();
        p.expect(b':')?;
        p.skip_space();
        let value_at = p.at;
        *slot = Some((p.value()?, value_at));
        p.skip_space();
        if p.eat(b',') {
            continue;
        }
        p.expect(b'}')?;
        break;
    }
    p.skip_space();
    if p.at < text.len() {
        return Err(p.error_at(p.at, "text after the closing '}'"));
    }
    let missing = |key: &str| Error::Npy(format!(".npy header has no {key:?} key"));
    let (descr, descr_at) = descr.ok_or_else(|| missing("descr"))?;
    let (fortran_order, fortran_at) = fortran_order.ok_or_else(|| missing("fortran_order"))?;
    let (shape, shape_at) = shape.ok_or_else(|| missing("shape"))?;
    let Value::Str(descr) = descr else {
        return Err(p.error_at(descr_at, "'descr' must be a string"));
    };
    let Value::Bool(fortran_order) = fortran_order else {
        return Err(p.error_at(fortran_at, "'fortran_order' must be True or False"));
    };
    let Value::Tuple(shape) = shape else {
        return Err(p.error_at(shape_at, "'shape' must be a tuple of integers"));
    };
    Ok((
        descr,
        Header {
            fortran_order,
            shape,
        },
    ))
}

/// A header value.
#[derive(Debug)]
enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A cursor over header text; `at` is a byte offset that is always on a char boundary
/// because it only ever steps over ASCII bytes.
struct HeaderParser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> HeaderParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error_at(self.at, &format!("expected {:?}", char::from(byte))))
        }
    }

    /// Python's whitespace between tokens (inside brackets a newline is whitespace too).
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.at += 1;
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let rest = self.text.as_bytes().get(self.at..).unwrap_or_default();
        let found = rest.starts_with(word.as_bytes())
            && !rest
                .get(word.len())
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if found {
            self.at += word.len();
        }
        found
    }

    fn value(&mut self) -> Result<Value<'a>> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => Ok(Value::Tuple(self.tuple()?)),
            _ if self.eat_word("True") => Ok(Value::Bool(true)),
            _ if self.eat_word("False") => Ok(Value::Bool(false)),
            _ => Err(self.error_at(self.at, "expected a string, True, False or a tuple")),
        }
    }

    /// A quoted string without escapes (numpy's keys and descr never need them).
    fn string(&mut self) -> Result<&'a str> {
        let start = self.at;
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error_at(start, "expected a quoted string")),
        };
        self.at += 1;
        let body_start = self.at;
        loop {
            match self.peek() {
                Some(b) if b == quote => break,
                Some(b'\\') => return Err(self.error_at(self.at, "escapes are not supported")),
                Some(b'\n' | b'\r') | None => {
                    return Err(self.error_at(start, "unterminated string"))
                }
                Some(b) if !b.is_ascii() => return Err(self.error_at(self.at, "non-ASCII text")),
                Some(_) => self.at += 1,
            }
        }
        let body = self.text.get(body_start..self.at).unwrap_or_default();
        self.at += 1;
        Ok(body)
    }

    /// A tuple of non-negative integers. `(5)` is an int in Python, not a tuple.
    fn tuple(&mut self) -> Result<Vec<usize>> {
        let start = self.at;
        self.expect(b'(')?;
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.eat(b')') {
                break;
            }
            dims.push(self.dimension()?);
            self.skip_space();
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                self.expect(b')')?;
                break;
            }
        }
        if dims.len() == 1 && !trailing_comma {
            return Err(self.error_at(start, "'shape' must be a tuple; (n) is an integer"));
        }
        Ok(dims)
    }

    fn dimension(&mut self) -> Result<usize> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at).unwrap_or_default();
        if digits.is_empty() {
            let what = if self.peek() == Some(b'-') {
                "dimensions must not be negative"
            } else {
                "expected a dimension"
            };
            return Err(self.error_at(start, what));
        }
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(self.error_at(start, "dimensions must not have leading zeros"));
        }
        digits
            .parse::<usize>()
            .map_err(|_| self.error_at(start, "dimension is too large"))
    }

    /// A one-line error that quotes, escaped, the header text from `at`.
    fn error_at(&self, at: usize, what: &str) -> Error {
        let rest = self.text.get(at..).unwrap_or_default();
        let quoted: String = rest.chars().take(QUOTE_CHARS).collect();
        let more = if rest.chars().nth(QUOTE_CHARS).is_some() {
            "…"
        } else {
            ""
        };
        Error::Npy(format!(
            "bad .npy header at byte {at}: {what}, at {:?}{more}",
            quoted
        ))
    }
}

/// Reorders column-major (first index fastest) values into row-major order.
///
/// `data.len()` is the product of `shape` (checked by the caller), so every offset
/// computed here is in range; `get` keeps that an invariant rather than a panic.
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..data.len() {
        // `index` walks row-major; its column-major offset picks the source.
        let (mut offset, mut stride) = (0usize, 1usize);
        for (i, d) in index.iter().zip(shape) {
            offset = offset.saturating_add(i.saturating_mul(stride));
            stride = stride.saturating_mul(*d);
        }
        out.push(data.get(offset).copied().unwrap_or(f32::NAN));
        for (i, d) in index.iter_mut().zip(shape).rev() {
            *i += 1;
            if *i < *d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Serialises an f32 array as `.npy` (version 1.0, C order), the header padded with
/// spaces and a newline so the data starts at a multiple of 64 bytes, as numpy does.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    encode(Dtype::F32, shape, data.iter().flat_map(|v| v.to_le_bytes()))
}

/// [`to_bytes`] for an int64 array (class labels, for instance).
pub fn to_bytes_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
    encode(Dtype::I64, shape, data.iter().flat_map(|v| v.to_le_bytes()))
}

fn encode(dtype: Dtype, shape: &[usize], body: impl Iterator<Item = u8>) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.as_slice() {
        [one] => format!("{one},"),
        _ => dims.join(", "),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({shape_text}), }}",
        dtype.descr()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(body);
    out
}

/// Element types [`Rows`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`: little-endian f32.
    F32,
    /// `<i4`: little-endian int32.
    I32,
    /// `<i8`: little-endian int64.
    I64,
}

impl Dtype {
    /// numpy's `descr` for it.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => F32_DESCR,
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
        }
    }

    /// numpy's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// An `.npy` file read one row at a time (a row is one index along the first axis: an
/// input of an `(N,3,H,W)` batch, a label of an `(N,)` vector), so memory does not grow
/// with the number of rows. Opening reads only the header and checks the file's size
/// against the shape; each read then takes one row's bytes. Rows may be read from any
/// thread. The array must be in C order (a row is contiguous), unless at most one
/// dimension exceeds 1, where both orders are the same bytes.
#[derive(Debug)]
pub struct Rows {
    path: PathBuf,
    file: Mutex<File>,
    dtype: Dtype,
    shape: Vec<usize>,
    data_start: u64,
    row_len: usize,
}

impl Rows {
    /// Opens `path`, which must hold one of the element types in `accept`.
    pub fn open(path: &Path, accept: &[Dtype]) -> Result<Rows> {
        let mut file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
        let mut head = Vec::new();
        (&mut file)
            .take(12 + MAX_HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("reading", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("reading", path, e))?
            .len();
        let (dtype, header, data_start) =
            Rows::header(&head, accept).with_context(|| format!("parsing {}", path.display()))?;
        let count = header
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size()))
            .or_fail_with(Error::Npy, || {
                format!(
                    "{}: .npy shape {:?} has too many bytes",
                    path.display(),
                    header.shape
                )
            })?;
        let data_len = file_len.saturating_sub(data_start);
        require!(
            data_len == count as u64,
            Npy,
            "{}: .npy holds {data_len} bytes of data, shape {:?} needs {count}",
            path.display(),
            header.shape
        );
        let Some(rest) = header.shape.get(1..) else {
            fail!(
                Npy,
                "{}: a 0-dimensional .npy array has no rows",
                path.display()
            );
        };
        require!(
            !header.fortran_order || header.shape.iter().filter(|&&d| d > 1).count() <= 1,
            Npy,
            "{}: .npy array of shape {:?} is in Fortran order; save it in C order \
             (numpy.ascontiguousarray)",
            path.display(),
            header.shape
        );
        Ok(Rows {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            dtype,
            row_len: rest.iter().product(),
            shape: header.shape,
            data_start,
        })
    }

    /// The element type, header and data offset in the file's first bytes.
    fn header(head: &[u8], accept: &[Dtype]) -> Result<(Dtype, Header, u64)> {
        require!(head.starts_with(MAGIC), Npy, "not an .npy file");
        let (text, body) = split_header(head)?;
        let data_start = (head.len() - body.len()) as u64;
        let (descr, header) = parse_header_any(text)?;
        let dtype = accept
            .iter()
            .copied()
            .find(|d| d.descr() == descr)
            .or_fail_with(Error::Npy, || {
                let expected: Vec<String> = accept
                    .iter()
                    .map(|d| format!("{} ({:?})", d.name(), d.descr()))
                    .collect();
                format!("holds {descr:?} values; expected {}", expected.join(" or "))
            })?;
        Ok((dtype, header, data_start))
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Rows: the first dimension.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Elements in a row: the product of the other dimensions.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Reads `out.len()` values of an f32 array from the start of row `row` on (one row
    /// if `out` holds [`Rows::row_len`] values).
    pub fn read_f32(&self, row: usize, out: &mut [f32]) -> Result<()> {
        self.check(row, out.len(), &[Dtype::F32])?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        self.read_at(row * self.row_len * 4, bytes)?;
        for v in out.iter_mut() {
            *v = f32::from_le_bytes(v.to_ne_bytes());
        }
        Ok(())
    }

    /// Reads `out.len()` values of an int32 or int64 array from the start of row `row`
    /// on, as i64 (one label of an `(N,)` array, or several).
    pub fn read_i64(&self, row: usize, out: &mut [i64]) -> Result<()> {
        self.check(row, out.len(), &[Dtype::I32, Dtype::I64])?;
        let size = self.dtype.size();
        let mut bytes = vec![0u8; out.len() * size];
        self.read_at(row * self.row_len * size, &mut bytes)?;
        for (v, b) in out.iter_mut().zip(bytes.chunks_exact(size)) {
            *v = match *b {
                [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_le_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            };
        }
        Ok(())
    }

    fn check(&self, row: usize, len: usize, dtypes: &[Dtype]) -> Result<()> {
        require!(
            dtypes.contains(&self.dtype),
            Npy,
            "{}: cannot read {} values as {}",
            self.path.display(),
            self.dtype.name(),
            dtypes[0].name()
        );
        let fits = row < self.rows()
            && row
                .checked_mul(self.row_len)
                .and_then(|start| start.checked_add(len))
                .is_some_and(|end| end <= self.rows() * self.row_len);
        require!(
            fits,
            Npy,
            "{}: no {len} values from row {row} in shape {:?}",
            self.path.display(),
            self.shape
        );
        Ok(())
    }

    fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.seek(SeekFrom::Start(self.data_start + offset as u64))
            .and_then(|_| file.read_exact(out))
            .map_err(|e| Error::io("reading", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` file with `header` verbatim, in the given version, and `body`.
    fn with_header(version: u8, header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The project's deterministic generator, so variant tests are reproducible.
    struct Rng(soft_kernels::rng::XorShift64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n)
        }
        fn space(&mut self) -> &'static str {
            ["", "", " ", "  ", "\t", "\n", " \n "][self.below(7)]
        }
    }

    /// The header text for `shape`, written one of the many ways Python would accept.
    fn random_header(rng: &mut Rng, fortran: bool, shape: &[usize]) -> String {
        let quote = |rng: &mut Rng, s: &str| {
            if rng.below(2) == 0 {
                format!("'{s}'")
            } else {
                format!("\"{s}\"")
            }
        };
        let mut dims: Vec<String> = Vec::new();
        for d in shape {
            let (a, b) = (rng.space(), rng.space());
            dims.push(format!("{a}{d}{b}"));
        }
        let trailing_dim_comma = shape.len() == 1 || (!shape.is_empty() && rng.below(2) == 0);
        let tuple = format!(
            "({}{}{})",
            dims.join(","),
            if trailing_dim_comma { "," } else { "" },
            rng.space()
        );
        let bool_text = if fortran { "True" } else { "False" };
        let mut entries = vec![
            (quote(rng, "descr"), quote(rng, "<f4")),
            (quote(rng, "fortran_order"), bool_text.to_string()),
            (quote(rng, "shape"), tuple),
        ];
        // Any of the six key orders.
        let first = rng.below(3);
        entries.swap(0, first);
        let second = 1 + rng.below(2);
        entries.swap(1, second);
        let body: Vec<String> = entries
            .into_iter()
            .map(|(k, v)| {
                let (a, b, c, d) = (rng.space(), rng.space(), rng.space(), rng.space());
                format!("{a}{k}{b}:{c}{v}{d}")
            })
            .collect();
        let trailing = if rng.below(2) == 0 { "," } else { "" };
        let lead = ["", " ", "\t "][rng.below(3)];
        let (inner, tail) = (rng.space(), rng.space());
        format!("{lead}{{{}{trailing}{inner}}}{tail}\n", body.join(","))
    }

    #[test]
    fn round_trip() {
        let bytes = to_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(b"not numpy at all").is_err());
        for shape in [vec![], vec![0], vec![5], vec![2, 0, 3], vec![1, 2, 3, 2]] {
            let count: usize = shape.iter().product();
            let data: Vec<f32> = (0..count).map(|i| i as f32 * 0.5 - 1.0).collect();
            let bytes = to_bytes(&shape, &data);
            assert_eq!(bytes.len() % 64, (count * 4) % 64, "data starts 64-aligned");
            let a = parse(&bytes).unwrap();
            assert_eq!((a.shape, a.data), (shape, data));
        }
    }

    #[test]
    fn fortran_order_is_reordered_whatever_the_spacing() {
        // Column-major [[1, 2, 3], [4, 5, 6]].
        let body = f32_bytes(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        for header in [
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            "{'descr':'<f4','fortran_order':True,'shape':(2,3)}",
            "{\"shape\":(2,3),\"fortran_order\":True,\"descr\":\"<f4\"}\n",
        ] {
            let a = parse(&with_header(1, header, &body)).unwrap();
            assert_eq!(a.shape, vec![2, 3]);
            assert_eq!(a.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "{header}");
        }
        // Three dimensions: element (i, j, k) sits at i + 2j + 6k in Fortran order.
        let shape = [2, 3, 4];
        let fortran: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let header = "{'descr':'<f4','fortran_order':True,'shape':(2,3,4)}";
        let a = parse(&with_header(1, header, &f32_bytes(&fortran))).unwrap();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    let c = (i * shape[1] + j) * shape[2] + k;
                    assert_eq!(a.data[c], (i + 2 * j + 6 * k) as f32);
                }
            }
        }
    }

    #[test]
    fn every_valid_spelling_of_a_header_is_accepted() {
        let mut rng = Rng(soft_kernels::rng::XorShift64::new(0x9e37_79b9_7f4a_7c15));
        let shapes: [&[usize]; 6] = [&[], &[0], &[7], &[2, 3], &[1, 2, 1], &[3, 1, 2, 1]];
        for round in 0..3000 {
            let shape = shapes[round % shapes.len()];
            let fortran = rng.below(2) == 0;
            let header = random_header(&mut rng, fortran, shape);
            let parsed = parse_header(&header).unwrap_or_else(|e| panic!("{header:?}: {e}"));
            assert_eq!(parsed.shape, shape, "{header:?}");
            assert_eq!(parsed.fortran_order, fortran, "{header:?}");
            let version = [1, 2, 3][rng.below(3)];
            let count: usize = shape.iter().product();
            let body = f32_bytes(&vec![1.5; count]);
            let a = parse(&with_header(version, &header, &body)).unwrap();
            assert_eq!(a.shape, shape);
        }
    }

    #[test]
    fn malformed_headers_are_refused_on_one_line() {
        let bad = [
            "",
            "{",
            "}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((2,),)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,),,}",
            "{,'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
            "{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}",
            // Duplicate, missing and extra keys.
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}",
            "{'descr': '<f4', 'shape': (2,)}",
            "{'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': True}",
            "{descr: '<f4', 'fortran_order': False, 'shape': (2,)}",
            // Wrong types and values.
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': True, 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': 'False', 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': '(2,)'}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (02,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': '<f4\", 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}\0",
            "{'descr': 'é', 'fortran_order': False, 'shape': (2,)}",
            " \n {'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
        ];
        for header in bad {
            let e = parse(&with_header(1, header, &f32_bytes(&[0.0, 0.0])))
                .expect_err(header)
                .to_string();
            assert!(!e.contains('\n') && !e.contains('\0'), "{header:?}: {e:?}");
            assert!(e.len() < 200, "{e}");
        }
        let e = parse_header("{'descr': '<f4',\n 'oops'\n: 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\\n"), "newlines are quoted escaped: {e}");
    }

    #[test]
    fn shapes_whose_size_overflows_are_refused() {
        for shape in [
            format!("({},)", usize::MAX),
            format!("({}, 2)", usize::MAX / 2 + 1),
            format!("({}, {})", 1usize << 32, 1usize << 32),
            format!("({},)", usize::MAX / 4 + 1),
        ] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}");
            let e = parse(&with_header(1, &header, &[])).unwrap_err();
            assert!(e.to_string().contains("too many"), "{shape}: {e}");
        }
        // A zero dimension makes even a huge shape empty.
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': True, 'shape': (0, {})}}",
            usize::MAX
        );
        assert!(parse(&with_header(1, &header, &[]))
            .unwrap()
            .data
            .is_empty());
    }

    #[test]
    fn preamble_is_checked() {
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}";
        let body = f32_bytes(&[2.0]);
        for version in [1, 2, 3] {
            assert_eq!(
                parse(&with_header(version, good, &body)).unwrap().data,
                [2.0]
            );
        }
        let mut minor = with_header(1, good, &body);
        minor[7] = 1;
        assert!(parse(&minor).is_err());
        assert!(parse(&with_header(4, good, &body)).is_err());
        let full = with_header(2, good, &body);
        for cut in 0..12 {
            assert!(parse(&full[..cut]).is_err());
        }
        // A header length past the end of the file, or past numpy's limit.
        let mut long = with_header(2, good, &body);
        long[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&long).is_err());
        let padded = format!("{good}{}\n", " ".repeat(MAX_HEADER_LEN));
        assert!(parse(&with_header(2, &padded, &body)).is_err());
        // Latin-1 bytes are not UTF-8.
        let mut latin1 = with_header(1, good, &body);
        let at = latin1.iter().position(|&b| b == b'<').unwrap();
        latin1[at] = 0xe9;
        let e = parse(&latin1).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn rows_are_read_one_at_a_time_and_checked_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let data: Vec<f32> = (0..24).map(|v| v as f32 - 3.5).collect();
        let batch = file("batch.npy", &to_bytes(&[4, 2, 3], &data));
        let rows = Rows::open(&batch, &[Dtype::F32]).unwrap();
        assert_eq!((rows.rows(), rows.row_len()), (4, 6));
        assert_eq!((rows.shape(), rows.dtype()), (&[4, 2, 3][..], Dtype::F32));
        let mut row = [0.0; 6];
        for i in [3, 0, 2] {
            rows.read_f32(i, &mut row).unwrap();
            assert_eq!(row, data[i * 6..][..6]);
        }
        let mut two = [0.0; 12];
        rows.read_f32(2, &mut two).unwrap();
        assert_eq!(two, data[12..]);
        assert!(rows.read_f32(4, &mut row).is_err());
        assert!(rows.read_f32(3, &mut two).is_err(), "past the end");
        assert!(
            rows.read_i64(0, &mut [0; 6]).is_err(),
            "f32 read as integers"
        );

        let labels = file("labels.npy", &to_bytes_i64(&[3], &[7, -1, i64::MAX]));
        let rows = Rows::open(&labels, &[Dtype::I64, Dtype::I32]).unwrap();
        let mut all = [0i64; 3];
        rows.read_i64(0, &mut all).unwrap();
        assert_eq!(all, [7, -1, i64::MAX]);
        let mut one = [0i64];
        rows.read_i64(1, &mut one).unwrap();
        assert_eq!(one, [-1]);
        assert!(rows.read_f32(0, &mut [0.0]).is_err());
        let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
        let int32 = file(
            "int32.npy",
            &with_header(1, header, &[5, 0, 0, 0, 255, 255, 255, 255]),
        );
        let rows = Rows::open(&int32, &[Dtype::I64, Dtype::I32]).unwrap();
        let mut both = [0i64; 2];
        rows.read_i64(0, &mut both).unwrap();
        assert_eq!(both, [5, -1]);

        // Refused when opened, on one line, naming the file.
        let full = to_bytes(&[4, 2, 3], &data);
        let fortran = "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 6), }";
        let fortran_vector = "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 24), }";
        assert!(Rows::open(
            &file("fv.npy", &with_header(1, fortran_vector, &f32_bytes(&data))),
            &[Dtype::F32]
        )
        .is_ok());
        for (name, bytes, accept, want) in [
            (
                "short.npy",
                &full[..full.len() - 1],
                &[Dtype::F32][..],
                "needs 96",
            ),
            (
                "long.npy",
                &[&full[..], &[0]].concat()[..],
                &[Dtype::F32][..],
                "needs 96",
            ),
            (
                "fortran.npy",
                &with_header(1, fortran, &f32_bytes(&data))[..],
                &[Dtype::F32][..],
                "Fortran order",
            ),
            (
                "scalar.npy",
                &to_bytes(&[], &[1.0])[..],
                &[Dtype::F32][..],
                "0-dimensional",
            ),
            (
                "floats.npy",
                &full[..],
                &[Dtype::I64, Dtype::I32][..],
                "expected int64 (\"<i8\") or int32",
            ),
            (
                "text.npy",
                b"not numpy",
                &[Dtype::F32][..],
                "not an .npy file",
            ),
            ("header.npy", &full[..40], &[Dtype::F32][..], "truncated"),
        ] {
            let e = Rows::open(&file(name, bytes), accept)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        let e = Rows::open(&dir.path().join("missing.npy"), &[Dtype::F32]).unwrap_err();
        assert!(e.to_string().contains("missing.npy"), "{e}");
        // A file that shrinks after opening fails on read, not with garbage.
        let shrinking = file("shrinking.npy", &full);
        let rows = Rows::open(&shrinking, &[Dtype::F32]).unwrap();
        std::fs::write(&shrinking, &full[..full.len() - 30]).unwrap();
        assert!(rows.read_f32(3, &mut row).is_err());
    }
}
