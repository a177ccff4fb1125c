//! Minimal `.npy` reading and writing for little-endian f32 arrays.

use std::path::Path;

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

/// Reads an `.npy` file holding `<f4` values in C order.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    require!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        Npy,
        "not an .npy file"
    );
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            require!(bytes.len() >= 12, Npy, "truncated .npy header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => fail!(Npy, "unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + header_len)
        .or_fail(Error::Npy, "truncated .npy header")?;
    let header = std::str::from_utf8(header).or_fail(Error::Npy, ".npy header is not text")?;
    require!(
        header.contains("'descr': '<f4'"),
        Npy,
        "only little-endian f32 .npy is supported, header: {header}"
    );
    let fortran = header.contains("'fortran_order': True");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .or_fail(Error::Npy, ".npy header has no shape")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().or_fail(Error::Npy, "bad .npy dimension"))
        .collect::<Result<Vec<_>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .or_fail(Error::Npy, ".npy shape overflows")?;
    let body = &bytes[start + header_len..];
    require!(
        body.len() == count * 4,
        Npy,
        ".npy holds {} bytes of data, shape {shape:?} needs {}",
        body.len(),
        count * 4
    );
    let data: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let data = if fortran {
        fortran_to_c(&data, &shape)
    } else {
        data
    };
    Ok(NpyArray { shape, data })
}

/// Reorders column-major (first index fastest) values into row-major order.
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    let mut index = vec![0usize; shape.len()];
    for v in out.iter_mut() {
        // `index` walks row-major; its column-major offset picks the source.
        let (mut offset, mut stride) = (0, 1);
        for (i, d) in index.iter().zip(shape) {
            offset += i * stride;
            stride *= d;
        }
        *v = data[offset];
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

/// Serialises an f32 array as `.npy` (version 1).
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape_text}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = to_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(b"not numpy at all").is_err());
        let fortran = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(fortran.is_empty() || fortran.contains("False"));
        let mut f = bytes.clone();
        let at = f.windows(5).position(|w| w == b"False").unwrap();
        f.splice(at..at + 5, b"True ".iter().copied());
        let a = parse(&f).unwrap();
        assert_eq!(a.data, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.5]);
    }
}
