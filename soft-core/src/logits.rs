//! What a caller does with the logits.

/// The class with the largest logit: the first of equal ones; an empty slice gives 0.
/// A NaN is never chosen over an earlier logit (it is not greater), but nothing is
/// chosen over a NaN at index 0. (The engine's logits are finite: it fails otherwise.)
pub fn argmax(logits: &[f32]) -> usize {
    let Some(&first) = logits.first() else {
        return 0;
    };
    let (mut best, mut best_value) = (0, first);
    for (i, &value) in logits.iter().enumerate().skip(1) {
        if value > best_value {
            (best, best_value) = (i, value);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn first_of_the_largest_and_nan_never_wins() {
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 0);
        assert_eq!(argmax(&[0.0, f32::NAN, 1.0]), 2);
        assert_eq!(argmax(&[-1.0, -0.5]), 1);
    }
}
