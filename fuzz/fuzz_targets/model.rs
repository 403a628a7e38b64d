//! `ember_fuzz::Target::Model` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ember_fuzz::Target::Model.run(data);
});
