//! A small file system of the test's own: a tmpfs mounted on a temporary
//! folder (as root, which `tests/run` is run as), unmounted when dropped,
//! with a filler file to take its room.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    folder: tempfile::TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB.
    pub fn mount(mib: u64) -> SmallDisk {
        let folder = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(folder.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs (run the tests as root)");
        let filler = folder.path().join("filler");
        SmallDisk { folder, filler }
    }

    pub fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.path().to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut stat), 0);
            stat.f_bavail as u64 * stat.f_frsize as u64
        }
    }

    /// Grows or shrinks the filler so that about `bytes` are left free.
    pub fn leave(&self, bytes: u64) {
        let filler = std::fs::metadata(&self.filler).map_or(0, |metadata| metadata.len());
        let wanted = (filler + self.free()).saturating_sub(bytes);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.filler)
            .unwrap();
        if wanted < filler {
            file.set_len(wanted).unwrap();
            return;
        }
        // Written, not sparse: tmpfs counts what is written.
        use std::io::{Seek as _, Write as _};
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(filler)).unwrap();
        let block = vec![1u8; 64 * 1024];
        let mut left = wanted - filler;
        while left > 0 {
            let size = left.min(block.len() as u64) as usize;
            if file.write_all(&block[..size]).is_err() {
                break;
            }
            left -= size as u64;
        }
        let _ = file.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status();
    }
}
