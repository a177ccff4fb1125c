//! Arbitrary bytes into the metadata reader: `Metadata::parse` of a section for a model
//! of 1–16 classes, plain or SOFT-Norm (picked by the first byte), must return `Ok` or
//! `Err`, never panic; every label index, in range or not, must read without a panic.
//!
//! A section the reader accepts must survive the writer: `Metadata::encode` of what was
//! read (its known records) must succeed, and reading that back must give the same
//! fields and labels. So the writer never refuses what the reader takes, and the reader
//! never takes what the writer would write differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soft_core::metadata::Metadata;
use soft_core::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&first, section)) = data.split_first() else {
        return;
    };
    let Some(preset) = ModelConfig::preset("soft_tiny") else {
        return;
    };
    let config = ModelConfig {
        num_classes: 1 + usize::from(first & 15),
        normalized: first & 16 != 0,
        ..preset
    };
    let Ok(meta) = Metadata::parse(section, &config) else {
        return;
    };
    for i in 0..config.num_classes + 2 {
        let label = meta.label(i);
        assert_eq!(
            label.is_some(),
            meta.labels.is_some() && i < config.num_classes
        );
    }
    let len = meta.encoded_len().expect("a parsed section has a length");
    let mut out = vec![0u8; len];
    meta.encode(&config, &mut out)
        .expect("the writer refused what the reader accepted");
    let again = Metadata::parse(&out, &config).expect("the reader refused what the writer wrote");
    fn labels(m: &Metadata<'_>) -> Option<Vec<String>> {
        m.labels.map(|l| l.iter().map(str::to_string).collect())
    }
    assert_eq!(labels(&meta), labels(&again));
    assert_eq!(
        Metadata {
            labels: None,
            ..meta
        },
        Metadata {
            labels: None,
            ..again
        }
    );
});
