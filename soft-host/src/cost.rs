//! Multiply-accumulate counts of a SOFT model, for benchmark tables.
