//! The demo's promises, asserted without timing: the bundled digits model, converted
//! three ways, meets its accuracy floors on the held-out split, and the engine's f32
//! logits match PyTorch's on every test image.

use soft_host::demo;
use soft_host::npy;
use soft_host::verify::{max_abs, max_abs_diff};

#[test]
fn digits_demo_meets_its_accuracy_floors() {
    let dir = demo::default_dir();
    let rows = demo::evaluate(&dir, || {}).unwrap();
    eprint!("{}", demo::table(&rows, rows[0].predictions.len()));
    demo::check(&rows).unwrap();
    assert!(rows[0].accuracy >= 0.97);
    assert!(rows[1].agreement >= 0.995);
    assert!(rows[2].accuracy >= rows[0].accuracy - 0.005);

    // The engine against the PyTorch model that was trained, image by image.
    let reference = npy::read(&dir.join("test_logits.npy")).unwrap();
    let classes = reference.shape[1];
    let mut worst = 0.0f32;
    for (got, want) in rows[0]
        .logits
        .iter()
        .zip(reference.data.chunks_exact(classes))
    {
        let scale = max_abs(want);
        let err = max_abs_diff(got, want);
        worst = worst.max(err / scale);
    }
    eprintln!("worst f32 logit error against PyTorch: {worst:.2e} of max |logit|");
    assert!(worst <= 1e-4, "{worst}");
}

#[test]
fn preprocessing_matches_training() {
    // Pixel 16 (ink) -> +1, pixel 0 -> -1, each source pixel an 8x8 block, in all channels.
    let mut digit = vec![0.0; 64];
    digit[9] = 16.0; // row 1, column 1
    let x = demo::preprocess(&digit);
    assert_eq!(x.len(), 3 * 64 * 64);
    assert_eq!(x[8 * 64 + 8], 1.0);
    assert_eq!(x[15 * 64 + 15], 1.0);
    assert_eq!(x[16 * 64 + 16], -1.0);
    assert_eq!(x[2 * 64 * 64 + 8 * 64 + 8], 1.0);
}
