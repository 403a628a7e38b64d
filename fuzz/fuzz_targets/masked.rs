//! `ember_fuzz::Target::Masked` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ember_fuzz::Target::Masked.run(data);
});
