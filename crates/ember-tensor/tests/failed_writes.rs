//! Saves that fail part-way leave the previous file as it was and no temporary file behind.
//! The failure is injected as a full disk is felt: the process's file-size limit
//! (`RLIMIT_FSIZE`) makes the write of the new bytes fail with `EFBIG` after part of them is
//! written. It is its own test binary: the limit holds for the whole process while it is set.

#![allow(clippy::unwrap_used)] // a test fails loudly, which is what it is for
#![cfg(unix)]

use std::path::Path;

use ember_tensor::fs::write_atomically;

/// The directory's entries, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Run `f` with the file-size limit at `bytes` (writing past it fails with `EFBIG` instead of
/// killing the process with `SIGXFSZ`), then lift the limit again.
#[allow(unsafe_code)]
fn with_file_size_limit<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    // SAFETY: plain libc calls on this process's own signal disposition and resource limit,
    // restored before returning; the structs are fully initialized.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let limited = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limited), 0);
        let out = f();
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0);
        out
    }
}

#[test]
fn a_save_that_fails_part_way_leaves_the_old_file_and_no_temporary_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let old = vec![7u8; 1000];
    write_atomically(&path, &old).unwrap();

    // A new version too large for the "disk": the write fails, the old file stays whole.
    let new = vec![9u8; 64 * 1024];
    let result = with_file_size_limit(4096, || write_atomically(&path, &new));
    let error = result.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge, "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), old);
    assert_eq!(entries(dir.path()), vec!["model.safetensors"]);

    // A save whose last step fails (the destination is a directory) leaves nothing either.
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    assert!(write_atomically(&taken, &new).is_err());
    assert_eq!(entries(dir.path()), vec!["model.safetensors", "taken"]);
    assert!(entries(&taken).is_empty());

    // And with the limit lifted the same save goes through.
    write_atomically(&path, &new).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), new);
}
