//! The fuzz targets' harnesses over their seed corpus on stable: every seed is accepted, and
//! every truncation and every single-byte change of a seed returns (an error or a model),
//! never panics. The crashes and unbounded allocations fuzzing found are named cases below.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for

use ember_fuzz::Target;

/// Every seed, each truncation of it and each byte of it replaced by its complement.
fn mutations(seed: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let truncations = (0..seed.len()).map(|len| seed[..len].to_vec());
    let flips = (0..seed.len()).map(|i| {
        let mut flipped = seed.to_vec();
        flipped[i] ^= 0xff;
        flipped
    });
    truncations.chain(flips)
}

fn every_mutation_returns(target: Target) {
    let seeds = target.seeds();
    assert!(!seeds.is_empty(), "{}: no seed", target.name());
    for seed in &seeds {
        assert!(
            target.run(seed),
            "{}: a valid seed was refused",
            target.name()
        );
        let refused = mutations(seed).filter(|m| !target.run(m)).count();
        // Truncated files are refused whole: nothing short of the full seed parses.
        assert!(
            refused >= seed.len(),
            "{}: {refused} refused",
            target.name()
        );
    }
}

#[test]
fn idx_files_raw_or_gzipped() {
    every_mutation_returns(Target::Idx);
}

#[test]
fn saved_models_and_their_sidecars() {
    every_mutation_returns(Target::Model);
}

#[test]
fn quantized_files() {
    every_mutation_returns(Target::Quantized);
}

#[test]
fn sparse_files() {
    every_mutation_returns(Target::Sparse);
}

#[test]
fn binary_files() {
    every_mutation_returns(Target::Binary);
}

#[test]
fn masked_files() {
    every_mutation_returns(Target::Masked);
}

#[test]
fn configs_as_json() {
    let target = Target::Configs;
    for seed in target.seeds() {
        assert!(target.run(&seed), "a valid config was refused");
        for m in mutations(&seed) {
            target.run(&m);
        }
    }
}

#[test]
fn a_header_that_promises_a_terabyte_is_refused_before_allocating() {
    // Rank 2, 2^20 x 2^20 bytes, no data: refused from the header alone.
    let mut idx = vec![0, 0, 8, 2];
    idx.extend_from_slice(&(1u32 << 20).to_be_bytes());
    idx.extend_from_slice(&(1u32 << 20).to_be_bytes());
    assert!(!Target::Idx.run(&idx));
    // The same header gzipped, with 8 MiB of zeros behind it: decompression stops at the
    // bound, not at what the header promises.
    let mut body = idx.clone();
    body.resize(idx.len() + (8 << 20), 0);
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    assert!(!Target::Idx.run(&gz));
}

#[test]
fn model_configs_that_promise_huge_models_are_not_built() {
    let huge = br#"{"Mlp":{"input":4294967295,"hidden":[4294967295],"classes":10}}"#;
    assert!(!Target::Configs.run(huge));
}

#[test]
fn every_target_has_a_name_that_finds_it() {
    for target in Target::ALL {
        assert_eq!(Target::from_name(target.name()), Some(target));
    }
    assert_eq!(Target::from_name("nothing"), None);
}
