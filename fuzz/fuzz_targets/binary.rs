//! `ember_fuzz::Target::Binary` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ember_fuzz::Target::Binary.run(data);
});
