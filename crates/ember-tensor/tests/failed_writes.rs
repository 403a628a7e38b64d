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

/// `dir` set so that no file can be created in it: read-only permissions and, for root (whom
/// permissions do not stop), the immutable attribute (`chattr +i`). Undone on drop.
struct ReadOnlyDir<'a>(&'a Path);

/// The immutable flag through the `FS_IOC_{GET,SET}FLAGS` ioctls on `dir`.
#[allow(unsafe_code)]
fn set_immutable(dir: &Path, on: bool) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let file = std::fs::File::open(dir)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctls read and write one `long` through a pointer to a live local, on a
    // descriptor this function owns.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        flags = if on {
            flags | FS_IMMUTABLE_FL
        } else {
            flags & !FS_IMMUTABLE_FL
        };
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl<'a> ReadOnlyDir<'a> {
    fn new(dir: &'a Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a plain libc call with no arguments.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            set_immutable(dir, true)
                .expect("root needs the immutable attribute to make a directory read-only");
        }
        Self(dir)
    }
}

impl Drop for ReadOnlyDir<'_> {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = set_immutable(self.0, false);
        let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_save_into_a_read_only_directory_fails_and_leaves_the_old_file() {
    // Under target/, not /tmp: the immutable attribute needs a file system that has it.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(root).unwrap();
    let path = dir.path().join("model.safetensors");
    write_atomically(&path, b"old").unwrap();
    {
        let _read_only = ReadOnlyDir::new(dir.path());
        assert!(write_atomically(&path, b"new bytes").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["model.safetensors"]);
    }
    write_atomically(&path, b"new bytes").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new bytes");
}
