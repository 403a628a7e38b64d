//! `ember_fuzz::Target::Configs` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ember_fuzz::Target::Configs.run(data);
});
