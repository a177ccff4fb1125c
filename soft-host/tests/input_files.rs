//! `soft run` on hostile or unusual input files: images of extreme aspect ratio run in
//! bounded memory, decompression bombs and malformed `.npy` headers fail on one line.

mod common;

use std::path::Path;

use common::{micro_blob, one_line, soft};
use image::{ImageFormat, Rgb, RgbImage};
use predicates::prelude::*;
use soft_tests::data;

#[test]
fn extreme_aspect_ratio_images_run() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let colour = Rgb([10, 200, 60]);
    for (name, w, h, format) in [
        ("wide.png", 60_000, 1, ImageFormat::Png),
        ("tall.png", 1, 60_000, ImageFormat::Png),
        ("wide.jpg", 60_000, 1, ImageFormat::Jpeg),
        ("tall.jpg", 1, 60_000, ImageFormat::Jpeg),
    ] {
        let path = dir.path().join(name);
        RgbImage::from_pixel(w, h, colour)
            .save_with_format(&path, format)
            .unwrap();
        soft()
            .arg("run")
            .arg(&blob)
            .arg("--image")
            .arg(&path)
            .args(["--image-size", "64"])
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .success();
    }
}

#[test]
fn oversized_images_fail_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    // A JPEG whose frame header claims 65535×65535 (12 GiB decoded).
    let mut jpeg = std::io::Cursor::new(Vec::new());
    RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]))
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .unwrap();
    let mut jpeg = jpeg.into_inner();
    let sof = jpeg.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff; 4]);
    let bomb = dir.path().join("bomb.jpg");
    std::fs::write(&bomb, jpeg).unwrap();
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--image")
        .arg(&bomb)
        .assert()
        .failure()
        .stderr(predicate::str::contains("limit").and(one_line()));
}

#[test]
fn fortran_order_npy_without_spaces_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let golden = data("golden/micro_64");
    let c_order = soft_host::npy::read(&golden.join("input.npy")).unwrap();
    let [1, 3, h, w] = c_order.shape[..] else {
        panic!("unexpected golden shape {:?}", c_order.shape)
    };
    // The same values in column-major order, under a header with no spaces at all.
    let dims = [1, 3, h, w];
    let mut fortran = Vec::with_capacity(c_order.data.len());
    for x in 0..w {
        for y in 0..h {
            for c in 0..3 {
                fortran.push(c_order.data[(c * h + y) * w + x]);
            }
        }
    }
    let header = format!(
        "{{'descr':'<f4','fortran_order':True,'shape':({},{},{},{})}}\n",
        dims[0], dims[1], dims[2], dims[3]
    );
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(fortran.iter().flat_map(|v| v.to_le_bytes()));
    let input = dir.path().join("fortran.npy");
    std::fs::write(&input, bytes).unwrap();

    let run = |input: &Path, out: &Path| {
        soft()
            .arg("run")
            .arg(&blob)
            .arg("--input-npy")
            .arg(input)
            .arg("--logits-out")
            .arg(out)
            .assert()
            .success();
        soft_host::npy::read(out).unwrap().data
    };
    let want = run(&golden.join("input.npy"), &dir.path().join("a.npy"));
    let got = run(&input, &dir.path().join("b.npy"));
    assert_eq!(want, got);

    let bad = dir.path().join("bad.npy");
    let header = b"{'descr':'<f4','fortran_order':True,'shape':(1,3,8,8),\n'x':1}";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header);
    std::fs::write(&bad, bytes).unwrap();
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicate::str::contains("header").and(one_line()));
}
