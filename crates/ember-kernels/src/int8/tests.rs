#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

/// A GEMM problem with full-range inputs: every `u8` and every `i8` can appear, so a kernel
/// whose intermediate sums saturate fails.
#[derive(Debug, Clone)]
struct Problem {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<u8>,
    w: Vec<i8>,
}

fn problem(max_m: usize, max_k: usize, max_n: usize) -> impl Strategy<Value = Problem> {
    (0..=max_m, 1..=max_k, 1..=max_n).prop_flat_map(|(m, k, n)| {
        (
            prop::collection::vec(any::<u8>(), m * k),
            prop::collection::vec(any::<i8>(), k * n),
        )
            .prop_map(move |(a, w)| Problem { m, k, n, a, w })
    })
}

fn packed(p: &Problem) -> PackedWeights {
    PackedWeights::new(&p.w, p.k, p.n, WeightLayout::InputMajor, &[1.0], &[0]).unwrap()
}

/// Runs every kernel this CPU has on `p` and compares with the triple loop, exactly.
fn check(p: &Problem) -> std::result::Result<(), TestCaseError> {
    let expected = reference_sums(&p.a, p.m, &p.w, p.k, p.n);
    let w = packed(p);
    for kernel in Int8Kernel::available() {
        let mut got = vec![0i32; p.m * p.n];
        gemm_sums(kernel, &p.a, p.m, &w, &mut got).unwrap();
        prop_assert_eq!(
            &got,
            &expected,
            "{} on {}x{}x{}",
            kernel.name(),
            p.m,
            p.k,
            p.n
        );
    }
    Ok(())
}

#[test]
fn kernels_this_cpu_lacks_are_named_and_skipped() {
    let names: Vec<&str> = Int8Kernel::available().iter().map(|k| k.name()).collect();
    for (name, kernel) in [
        ("avx2", Int8Kernel::avx2()),
        ("avx512_vnni", Int8Kernel::avx512_vnni()),
    ] {
        if kernel.is_none() {
            eprintln!("int8: this CPU has no {name}: its kernel is not tested here");
        }
        assert_eq!(names.contains(&name), kernel.is_some());
    }
    assert_eq!(names[0], "portable");
}

#[test]
fn peak_loops_do_the_work_they_count() {
    for kernel in Int8Kernel::available() {
        let Some((ops, checksum)) = peak_loop(kernel, 10) else {
            assert_eq!(kernel, Int8Kernel::Portable);
            continue;
        };
        // The sum over all lanes is known exactly from the rounds. VNNI: every product is
        // 1 · (1, 2, 3 or 4). AVX2: on round r (from 1) each lane of chain c adds
        // (3 + r) · (c + 1) + (2 + r) · 0.
        let chain_weights: i64 = (1..=12).sum();
        let activations: i64 = (1..=10).map(|r| 3 + r).sum();
        let expected = match kernel {
            Int8Kernel::Avx512Vnni(_) => 10 * 12 * 16 * (1 + 2 + 3 + 4),
            _ => 8 * chain_weights * activations,
        };
        assert_eq!(checksum, expected, "{}", kernel.name());
        assert!(ops > 0);
    }
}

#[test]
fn hand_computed_product_with_zero_points_and_bias() {
    // a = [[1, 2], [3, 4]] with zero point 1, scale 0.5; w = [[1, -1], [2, 0]] ([k, n]) with
    // zero points [0, -1], scales [1, 2]; bias [10, 20].
    // (a - 1) = [[0, 1], [2, 3]]; (w - zw) = [[1, 0], [2, 1]].
    // Products: [[2, 1], [8, 3]]; times 0.5 · [1, 2]: [[1, 1], [4, 3]]; plus bias.
    let w = PackedWeights::new(
        &[1, -1, 2, 0],
        2,
        2,
        WeightLayout::InputMajor,
        &[1.0, 2.0],
        &[0, -1],
    )
    .unwrap();
    for kernel in Int8Kernel::available() {
        let mut out = vec![0.0; 4];
        let a = Activations {
            values: &[1, 2, 3, 4],
            rows: 2,
            stride: 2,
            scale: 0.5,
            zero_point: 1,
        };
        let epilogue = Epilogue {
            bias: Some(&[10.0, 20.0]),
            relu: false,
        };
        linear(kernel, a, &w, epilogue, &mut out).unwrap();
        assert_eq!(out, vec![11.0, 21.0, 14.0, 23.0], "{}", kernel.name());
        let relu = Epilogue {
            bias: Some(&[-2.0, -2.0]),
            relu: true,
        };
        linear(kernel, a, &w, relu, &mut out).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 2.0, 1.0], "{}", kernel.name());
    }
}

#[test]
fn quantizing_rounds_ties_to_even_and_clamps_like_the_scalar_rule() {
    let mut x: Vec<f32> = (-300..300).map(|i| i as f32 * 0.5).collect();
    x.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, -0.0]);
    for (zero_point, (min, max)) in [
        (128, (0, 255)),
        (0, (0, 255)),
        (3, (0, 15)),
        (250, (0, 255)),
    ] {
        for kernel in Int8Kernel::available() {
            let mut out = Vec::new();
            quantize_u8_with(kernel, &x, 1.0, zero_point, (min, max), &mut out);
            assert_eq!(out.len(), x.len());
            for (&v, &q) in x.iter().zip(&out) {
                let expected = (v.round_ties_even() as i64)
                    .saturating_add(i64::from(zero_point))
                    .clamp(i64::from(min), i64::from(max));
                let name = kernel.name();
                assert_eq!(
                    i64::from(q),
                    expected,
                    "{name}: {v} with zero point {zero_point}"
                );
            }
        }
    }
}

#[test]
fn the_range_pass_finds_extremes_and_refuses_non_finite_values() {
    let x: Vec<f32> = (0..37).map(|i| ((i * 7) % 19) as f32 - 9.0).collect();
    assert_eq!(finite_range(&x), Some((-9.0, 9.0)));
    assert_eq!(finite_range(&[]), None);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 16, 36] {
            let mut y = x.clone();
            y[at] = bad;
            assert_eq!(finite_range(&y), None, "{bad} at {at}");
        }
    }
}

#[test]
fn inputs_split_across_threads_give_the_same_range_and_integers() {
    let n = PARALLEL_ELEMENTS + 17;
    let mut x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
        .collect();
    x[n - 1] = 12.5;
    x[ELEMENT_CHUNK + 3] = -11.0;
    assert_eq!(finite_range(&x), Some((-11.0, 12.5)));
    for kernel in Int8Kernel::available() {
        let mut whole = Vec::new();
        quantize_u8_with(kernel, &x, 0.09, 121, (0, 255), &mut whole);
        let mut pieces = Vec::new();
        for chunk in x.chunks(1000) {
            let mut piece = Vec::new();
            quantize_u8_with(kernel, chunk, 0.09, 121, (0, 255), &mut piece);
            pieces.extend(piece);
        }
        assert_eq!(whole, pieces, "{}", kernel.name());
    }
    for bad in [f32::NAN, f32::INFINITY] {
        let mut y = x.clone();
        y[n - 2] = bad;
        assert_eq!(finite_range(&y), None, "{bad} in the last piece");
    }
}

#[test]
fn both_layouts_pack_the_same_matrix() {
    // [k = 3, n = 2] and its transpose.
    let kn = [1i8, 2, 3, 4, 5, 6];
    let nk = [1i8, 3, 5, 2, 4, 6];
    let a = PackedWeights::new(&kn, 3, 2, WeightLayout::InputMajor, &[1.0], &[0]).unwrap();
    let b = PackedWeights::new(&nk, 3, 2, WeightLayout::OutputMajor, &[1.0], &[0]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.col_sums, vec![9, 12]);
}

#[test]
fn full_range_extremes_are_exact() {
    // The case that saturates `vpmaddubsw`: 255 · -128 + 255 · -128 < -32768.
    for (k, n) in [(1, 1), (4, 16), (768, 40), (4096, 3)] {
        let p = Problem {
            m: 7,
            k,
            n,
            a: vec![255; 7 * k],
            w: vec![-128; k * n],
        };
        check(&p).unwrap();
        let p = Problem {
            m: 7,
            k,
            n,
            a: vec![255; 7 * k],
            w: vec![127; k * n],
        };
        check(&p).unwrap();
    }
}

#[test]
fn empty_batches_and_bad_parameters() {
    let w = PackedWeights::new(&[1, 2], 1, 2, WeightLayout::InputMajor, &[1.0], &[0]).unwrap();
    for kernel in Int8Kernel::available() {
        let mut out = vec![];
        let a = Activations {
            values: &[],
            rows: 0,
            stride: 1,
            scale: 1.0,
            zero_point: 0,
        };
        linear(kernel, a, &w, Epilogue::default(), &mut out).unwrap();
        let bad = Activations {
            values: &[1],
            rows: 1,
            stride: 1,
            scale: 0.0,
            zero_point: 0,
        };
        let mut out = vec![0.0; 2];
        assert!(matches!(
            linear(kernel, bad, &w, Epilogue::default(), &mut out),
            Err(KernelError::Parameter { .. })
        ));
    }
    assert!(matches!(
        PackedWeights::new(&[1, 2], 1, 2, WeightLayout::InputMajor, &[f32::NAN], &[0]),
        Err(KernelError::Parameter { .. })
    ));
    assert!(matches!(
        PackedWeights::new(
            &[1, 2],
            1,
            2,
            WeightLayout::InputMajor,
            &[1.0, 1.0, 1.0],
            &[0]
        ),
        Err(KernelError::Length { .. })
    ));
    assert!(matches!(
        PackedWeights::new(
            &[1],
            MAX_DEPTH + 1,
            0,
            WeightLayout::InputMajor,
            &[1.0],
            &[0]
        ),
        Err(KernelError::Length { .. } | KernelError::TooLarge(_))
    ));
}

/// A full-range `m x k` activation and `k x n` weight from a fixed pattern.
fn patterned(m: usize, k: usize, n: usize) -> (Vec<u8>, Vec<i8>) {
    let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 256) as u8).collect();
    let w: Vec<i8> = (0..k * n).map(|i| (i * 101 % 256) as u8 as i8).collect();
    (a, w)
}

/// Asserts that `out` is `linear`'s exact result for activations with scale 0.5 and zero
/// point 7 and weights with scale 0.01 and zero point 3, from the triple loop and the zero
/// points' expansion computed in `i64`.
fn assert_exact_linear(
    out: &[f32],
    a: &[u8],
    w: &[i8],
    (m, k, n): (usize, usize, usize),
    what: &str,
) {
    let expected = reference_sums(a, m, w, k, n);
    let row_sums: Vec<i64> = a
        .chunks(k)
        .map(|r| r.iter().map(|&v| i64::from(v)).sum())
        .collect();
    let col_sums: Vec<i64> = (0..n)
        .map(|c| (0..k).map(|i| i64::from(w[i * n + c])).sum())
        .collect();
    for r in 0..m {
        for c in 0..n {
            let exact = i64::from(expected[r * n + c]) - 7 * col_sums[c] - 3 * row_sums[r]
                + (k as i64) * 7 * 3;
            assert_eq!(
                out[r * n + c],
                exact as f32 * (0.5 * 0.01),
                "{what}: ({r}, {c}) of {m}x{k}x{n}"
            );
        }
    }
}

fn linear_on(kernel: Int8Kernel, a: &[u8], packed: &PackedWeights, m: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * packed.width()];
    let acts = Activations {
        values: a,
        rows: m,
        stride: packed.depth(),
        scale: 0.5,
        zero_point: 7,
    };
    linear(kernel, acts, packed, Epilogue::default(), &mut out).unwrap();
    out
}

#[test]
fn the_thread_splits_give_the_same_result() {
    // Both large enough to cross PARALLEL_MIN_MACS: a batch splits by rows, one row by
    // columns.
    for (m, k, n) in [(120, 800, 700), (1, 4096, 1100)] {
        let (a, w) = patterned(m, k, n);
        assert!(
            m * k * n
                >= if m > 1 {
                    PARALLEL_MIN_ROW_MACS
                } else {
                    PARALLEL_MIN_MACS
                }
        );
        let packed = PackedWeights::new(&w, k, n, WeightLayout::InputMajor, &[0.01], &[3]).unwrap();
        for kernel in Int8Kernel::available() {
            let out = linear_on(kernel, &a, &packed, m);
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let single = one.install(|| linear_on(kernel, &a, &packed, m));
            assert_eq!(out, single, "{}: threads change the result", kernel.name());
            assert_exact_linear(&out, &a, &w, (m, k, n), kernel.name());
        }
    }
}

#[test]
fn batches_of_several_bands_are_exact() {
    // One thread, so that every row goes through one thread's bands: a band and one row
    // more, several bands with a short last one, and depths off the 4-element group.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (m, k, n) in [
        (BAND_ROWS + 1, 33, 70),
        (3 * BAND_ROWS - 5, 6, 17),
        (2 * BAND_ROWS, 1, 16),
    ] {
        let (a, w) = patterned(m, k, n);
        let packed = PackedWeights::new(&w, k, n, WeightLayout::InputMajor, &[0.01], &[3]).unwrap();
        for kernel in Int8Kernel::available() {
            let out = one.install(|| linear_on(kernel, &a, &packed, m));
            assert_exact_linear(&out, &a, &w, (m, k, n), kernel.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Small shapes: every tail of the 6-row, 4-block and 4-element tiles, M = 0 and 1, K = 1.
    #[test]
    fn every_kernel_matches_the_triple_loop_on_small_shapes(p in problem(14, 40, 70)) {
        check(&p)?;
    }

    /// Deeper products with full-range values.
    #[test]
    fn every_kernel_matches_the_triple_loop_on_deep_products(p in problem(3, 2100, 20)) {
        check(&p)?;
    }

    /// `quantize_u8` is the scalar quantizer: round half to even, clamp to 0..=255.
    #[test]
    fn quantize_matches_the_scalar_rule(x in prop::collection::vec(-300.0f32..300.0, 0..50),
                                        scale in 0.01f32..4.0, zero_point in 0i32..=255,
                                        max in 1u8..=255) {
        for kernel in Int8Kernel::available() {
            let mut out = Vec::new();
            quantize_u8_with(kernel, &x, scale, zero_point, (0, max), &mut out);
            prop_assert_eq!(out.len(), x.len());
            for (&v, &q) in x.iter().zip(&out) {
                let expected = ((v / scale).round_ties_even() as i64 + i64::from(zero_point))
                    .clamp(0, i64::from(max));
                prop_assert_eq!(i64::from(q), expected, "{}", kernel.name());
            }
        }
    }
}

/// A convolution problem with full-range images, weights and zero points.
#[derive(Debug, Clone)]
struct ConvProblem {
    batch: usize,
    shape: ConvShape,
    n: usize,
    images: Vec<u8>,
    w: Vec<i8>,
    zero_points: (i32, i32),
}

fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    (
        (0..=3usize, 1..=4usize, 1..=9usize, 1..=9usize, 1..=20usize),
        (
            1..=5usize,
            1..=5usize,
            1..=3usize,
            1..=3usize,
            1..=2usize,
            1..=2usize,
        ),
        (0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize),
        (any::<u8>(), prop_oneof![Just(0i32), -128..=127i32]),
    )
        .prop_filter_map(
            "the filter fits the padded input",
            |((batch, channels, height, width, n), (kh, kw, sy, sx, dy, dx), pads, zps)| {
                let shape = ConvShape {
                    channels,
                    height,
                    width,
                    kernel: [kh, kw],
                    stride: [sy, sx],
                    dilation: [dy, dx],
                    padding: [(pads.0, pads.1), (pads.2, pads.3)],
                };
                shape
                    .output()
                    .ok()
                    .map(|_| (batch, shape, n, (i32::from(zps.0), zps.1)))
            },
        )
        .prop_flat_map(|(batch, shape, n, zero_points)| {
            let len = batch * shape.channels * shape.height * shape.width;
            (
                prop::collection::vec(any::<u8>(), len),
                prop::collection::vec(any::<i8>(), n * shape.depth()),
            )
                .prop_map(move |(images, w)| ConvProblem {
                    batch,
                    shape,
                    n,
                    images,
                    w,
                    zero_points,
                })
        })
}

/// Every kernel's convolution against the plain loops: with unit scales, no bias and sums
/// below 2^24, the f32 outputs are the exact integers.
fn check_conv(p: &ConvProblem) -> std::result::Result<(), TestCaseError> {
    let (za, zw) = p.zero_points;
    let expected = reference_conv_sums(&p.images, p.batch, &p.shape, &p.w, p.n, (za, zw)).unwrap();
    let k = p.shape.depth();
    let w = PackedWeights::new(&p.w, k, p.n, WeightLayout::OutputMajor, &[1.0], &[zw]).unwrap();
    let image_len = p.shape.channels * p.shape.height * p.shape.width;
    let images = Activations {
        values: &p.images,
        rows: p.batch,
        stride: image_len,
        scale: 1.0,
        zero_point: za,
    };
    for kernel in Int8Kernel::available() {
        let mut got = vec![f32::NAN; expected.len()];
        conv2d(kernel, images, &p.shape, &w, Epilogue::default(), &mut got).unwrap();
        let got: Vec<i32> = got.iter().map(|&v| v as i32).collect();
        prop_assert_eq!(&got, &expected, "{} on {:?}", kernel.name(), p.shape);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_kernel_convolves_exactly(p in conv_problem()) {
        check_conv(&p)?;
    }
}

#[test]
fn a_hand_computed_convolution_with_padding_bias_and_relu() {
    // One 3x3 image [[1,2,3],[4,5,6],[7,8,9]] (zero point 0, scale 0.5), a 2x2 filter of
    // ones (scale 0.25), padding 1 on the left and top only, bias -1, ReLU.
    let shape = ConvShape {
        channels: 1,
        height: 3,
        width: 3,
        kernel: [2, 2],
        stride: [1, 1],
        dilation: [1, 1],
        padding: [(1, 0), (1, 0)],
    };
    assert_eq!(shape.output().unwrap(), [3, 3]);
    let w = PackedWeights::new(&[1; 4], 4, 1, WeightLayout::OutputMajor, &[0.25], &[0]).unwrap();
    let image: Vec<u8> = (1..=9).collect();
    let images = Activations {
        values: &image,
        rows: 1,
        stride: 9,
        scale: 0.5,
        zero_point: 0,
    };
    // Window sums: [[1, 3, 5], [5, 12, 16], [11, 24, 28]], times 0.125, minus 1, ReLU.
    let sums = [1.0f32, 3.0, 5.0, 5.0, 12.0, 16.0, 11.0, 24.0, 28.0];
    let expected: Vec<f32> = sums.iter().map(|s| (s * 0.125 - 1.0).max(0.0)).collect();
    let epilogue = Epilogue {
        bias: Some(&[-1.0]),
        relu: true,
    };
    for kernel in Int8Kernel::available() {
        let mut out = vec![0.0; 9];
        conv2d(kernel, images, &shape, &w, epilogue, &mut out).unwrap();
        assert_eq!(out, expected, "{}", kernel.name());
    }
}

#[test]
fn convolutions_that_do_not_fit_are_refused() {
    let shape = ConvShape {
        channels: 1,
        height: 2,
        width: 2,
        kernel: [3, 3],
        stride: [1, 1],
        dilation: [1, 1],
        padding: [(0, 0), (0, 0)],
    };
    assert!(matches!(shape.output(), Err(KernelError::Parameter { .. })));
    let zero_stride = ConvShape {
        stride: [0, 1],
        padding: [(1, 1), (1, 1)],
        ..shape
    };
    assert!(matches!(
        zero_stride.output(),
        Err(KernelError::Parameter { .. })
    ));
    let fits = ConvShape {
        padding: [(1, 1), (1, 1)],
        ..shape
    };
    let w = PackedWeights::new(&[1; 9], 9, 1, WeightLayout::OutputMajor, &[1.0], &[0]).unwrap();
    let image = [0u8; 4];
    let images = Activations {
        values: &image,
        rows: 1,
        stride: 4,
        scale: 1.0,
        zero_point: 0,
    };
    let mut out = vec![0.0; 3];
    assert!(matches!(
        conv2d(
            Int8Kernel::Portable,
            images,
            &fits,
            &w,
            Epilogue::default(),
            &mut out
        ),
        Err(KernelError::Length { what: "output", .. })
    ));
}

#[test]
fn a_convolution_split_across_threads_gives_the_same_result() {
    // LeNet-5's second layer on 64 images: past the convolution's threshold for threads.
    let shape = ConvShape {
        channels: 6,
        height: 14,
        width: 14,
        kernel: [5, 5],
        stride: [1, 1],
        dilation: [1, 1],
        padding: [(0, 0), (0, 0)],
    };
    let (batch, n, k) = (64, 16, shape.depth());
    let images: Vec<u8> = (0..batch * 6 * 196).map(|i| (i * 37 % 256) as u8).collect();
    let w: Vec<i8> = (0..n * k).map(|i| (i * 101 % 256) as u8 as i8).collect();
    let packed = PackedWeights::new(&w, k, n, WeightLayout::OutputMajor, &[1.0], &[0]).unwrap();
    let acts = Activations {
        values: &images,
        rows: batch,
        stride: 6 * 196,
        scale: 1.0,
        zero_point: 9,
    };
    let expected = reference_conv_sums(&images, batch, &shape, &w, n, (9, 0)).unwrap();
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    for kernel in Int8Kernel::available() {
        let run = |threads| {
            let mut out = vec![0.0; expected.len()];
            pool(threads)
                .install(|| conv2d(kernel, acts, &shape, &packed, Epilogue::default(), &mut out))
                .unwrap();
            out
        };
        let two = run(2);
        assert_eq!(two, run(1), "{}: threads change the result", kernel.name());
        let exact: Vec<i32> = two.iter().map(|&v| v as i32).collect();
        assert_eq!(exact, expected, "{}", kernel.name());
    }
}
