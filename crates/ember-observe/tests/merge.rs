//! `merge` of two observers equals one observer over the concatenated data.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use ember_observe::{ObserverConfig, RangeMethod};
use proptest::prelude::*;

fn values() -> impl Strategy<Value = Vec<f32>> {
    // Mixed scales, so that merging often has to coarsen one side's grid.
    prop::collection::vec(
        prop_oneof![-1.0f32..1.0, -1000.0f32..1000.0, Just(0.0f32)],
        1..200,
    )
}

proptest! {
    // Each case builds a dozen histograms; 64 cases keep the debug build under a few seconds.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merging_equals_observing_everything(
        a in values(),
        b in values(),
        c in values(),
        per_channel in any::<bool>(),
    ) {
        let configs = [
            ObserverConfig::min_max(),
            ObserverConfig::histogram(RangeMethod::Percentile(99.0)),
        ];
        for config in configs {
            // Per channel: 1 channel per row of 1 value would be trivial; use the same length
            // for every part and split it into 2 channels along axis 0.
            let (config, parts) = if per_channel {
                let n = a.len().min(b.len()).min(c.len()) / 2 * 2;
                if n == 0 { continue; }
                (config.per_channel(0), [&a[..n], &b[..n], &c[..n]])
            } else {
                (config, [&a[..], &b[..], &c[..]])
            };
            let shape = |p: &[f32]| if per_channel { vec![2, p.len() / 2] } else { vec![p.len()] };

            let mut left = config.build("x").unwrap();
            left.observe(parts[0], &shape(parts[0])).unwrap();
            let mut right = config.build("x").unwrap();
            right.observe(parts[1], &shape(parts[1])).unwrap();
            right.observe(parts[2], &shape(parts[2])).unwrap();
            left.merge(&right).unwrap();

            let mut whole = config.build("x").unwrap();
            // The channels of the concatenation along axis 1.
            let mut all = Vec::new();
            if per_channel {
                for channel in 0..2 {
                    for p in parts {
                        let half = p.len() / 2;
                        all.extend_from_slice(&p[channel * half..(channel + 1) * half]);
                    }
                }
            } else {
                for p in parts { all.extend_from_slice(p); }
            }
            whole.observe(&all, &shape(&all)).unwrap();

            // Equal statistics, not only equal ranges: every bin count matches.
            prop_assert_eq!(left.batches(), 3);
            prop_assert_eq!(left.histograms(), whole.histograms());
            prop_assert_eq!(left.ranges(256).unwrap(), whole.ranges(256).unwrap());
        }
    }
}
