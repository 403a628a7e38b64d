//! Properties of the quantize / dequantize arithmetic, for every type, mode and granularity.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use ember_quant::{Mode, QScheme, QTensor, QType};
use proptest::prelude::*;

fn scheme() -> impl Strategy<Value = QScheme> {
    let qtype = prop_oneof![
        Just(QType::Int8),
        Just(QType::UInt8),
        Just(QType::Int4),
        Just(QType::UInt4)
    ];
    let mode = prop_oneof![Just(Mode::Symmetric), Just(Mode::Affine)];
    // A width narrower than the type's, as a 2-bit scheme in an Int4 (0: the type's own).
    let narrow = 0..8u32;
    (qtype, mode, 0..4usize, 1..5usize, any::<bool>(), narrow).prop_map(
        |(t, m, g, size, reduce, narrow)| {
            let s = QScheme::new(t, m);
            let s = match g {
                0 => s,
                1 => s.per_channel(1),
                2 => s.per_group(0, size),
                _ => s.per_flat_group(1, size),
            };
            let s = if narrow > 0 {
                s.with_bits(2 + narrow % (t.bits() - 1))
            } else {
                s
            };
            if reduce && s.width() > 2 {
                s.with_reduce_range()
            } else {
                s
            }
        },
    )
}

fn tensor() -> impl Strategy<Value = (Vec<f32>, [usize; 2])> {
    (1..6usize, 1..6usize, 0.01f32..100.0, -1.0f32..1.0).prop_flat_map(|(r, c, spread, shift)| {
        (
            prop::collection::vec(
                (-1.0f32..1.0).prop_map(move |v| (v + shift) * spread),
                r * c,
            ),
            Just([r, c]),
        )
    })
}

proptest! {
    #[test]
    fn round_trip_error_is_at_most_half_a_step_inside_the_range(
        s in scheme(),
        (values, shape) in tensor(),
    ) {
        prop_assume!(values.iter().any(|&v| v != 0.0));
        let q = QTensor::quantize(&values, &shape, s, "x").unwrap();
        let layout = s.layout(&shape, "x").unwrap();
        let (qmin, qmax) = s.bounds();
        for (i, (&x, &x_hat)) in values.iter().zip(&q.dequantize()).enumerate() {
            let p = layout.index(i);
            let (scale, zp) = (q.params().scale[p], q.params().zero_point[p]);
            let lo = (qmin - zp) as f32 * scale;
            let hi = (qmax - zp) as f32 * scale;
            let tolerance = scale / 2.0 + scale * 1e-4;
            if x >= lo && x <= hi {
                prop_assert!((x - x_hat).abs() <= tolerance, "{x} -> {x_hat}, scale {scale}");
            } else {
                // Outside the grid a value clamps to its nearest end.
                let end = if x < lo { lo } else { hi };
                prop_assert!((x_hat - end).abs() <= scale * 1e-4, "{x} -> {x_hat}, end {end}");
            }
        }
    }

    #[test]
    fn quantizing_is_idempotent(s in scheme(), (values, shape) in tensor()) {
        prop_assume!(values.iter().any(|&v| v != 0.0));
        let once = QTensor::quantize(&values, &shape, s, "x").unwrap();
        let again = QTensor::with_params(
            &once.dequantize(), &shape, s, once.params().clone(), "x",
        ).unwrap();
        prop_assert_eq!(once.values(), again.values());
    }

    #[test]
    fn zero_is_exact_and_clamping_holds(
        s in scheme(),
        (values, shape) in tensor(),
        outlier in 2.0f32..10.0,
    ) {
        // The first element probes zero, the last one clamping: two elements at least.
        prop_assume!(values.len() >= 2 && values.iter().any(|&v| v != 0.0));
        let q = QTensor::quantize(&values, &shape, s, "x").unwrap();
        let mut probe = values.clone();
        probe[0] = 0.0;
        let max_abs = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let last = probe.len() - 1;
        probe[last] = max_abs * outlier + 1.0;
        let p = QTensor::with_params(&probe, &shape, s, q.params().clone(), "x").unwrap();
        let back = p.dequantize();
        prop_assert_eq!(back[0], 0.0);
        let (_, qmax) = s.bounds();
        prop_assert_eq!(p.values()[last], qmax);
        prop_assert!(back.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn stored_parts_round_trip(s in scheme(), (values, shape) in tensor()) {
        prop_assume!(values.iter().any(|&v| v != 0.0));
        let q = QTensor::quantize(&values, &shape, s, "x").unwrap();
        let rebuilt = QTensor::from_parts(
            *q.scheme(), q.shape().to_vec(), q.params().clone(), q.data().to_vec(), "x",
        ).unwrap();
        prop_assert_eq!(rebuilt, q);
    }
}
