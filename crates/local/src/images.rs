//! The image store: content-addressed, read-only blobs
//! (`<state>/local/blobs/<sha256>`) shared by every image that has the same
//! file, and per-image manifests (path → blob, mode) kept in the state.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub hash: String,
    pub mode: u32,
}

/// Relative path → file; what an image is.
pub type Manifest = BTreeMap<String, FileEntry>;

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl BlobStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Store `data` once; blobs are read-only so nothing can change an image.
    pub fn put(&self, data: &[u8]) -> io::Result<String> {
        let hash = sha256_hex(data);
        let path = self.path(&hash);
        if !path.exists() {
            crate::util::write_atomic(&path, data)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
        }
        Ok(hash)
    }

    /// Snapshot a directory tree (regular files; symlinks and special files
    /// are not part of local images).
    pub fn snapshot(&self, root: &Path) -> io::Result<Manifest> {
        let mut manifest = Manifest::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let ft = entry.file_type()?;
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    let rel = path.strip_prefix(root).map_err(io::Error::other)?;
                    let rel = rel
                        .to_str()
                        .ok_or_else(|| io::Error::other("non-UTF-8 path"))?
                        .to_string();
                    let data = std::fs::read(&path)?;
                    let mode = entry.metadata()?.permissions().mode() & 0o7777;
                    manifest.insert(
                        rel,
                        FileEntry {
                            hash: self.put(&data)?,
                            mode,
                        },
                    );
                }
            }
        }
        Ok(manifest)
    }

    /// Store in-memory files (the built-in image).
    pub fn import_files(&self, files: &[(String, Vec<u8>)]) -> io::Result<Manifest> {
        let mut m = Manifest::new();
        for (rel, data) in files {
            m.insert(
                rel.clone(),
                FileEntry {
                    hash: self.put(data)?,
                    mode: 0o644,
                },
            );
        }
        Ok(m)
    }

    /// Copy (never link: an instance writing a file must not change the
    /// image) every file into `dest`, verifying each blob's hash.
    pub fn materialize(&self, manifest: &Manifest, dest: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dest)?;
        for (rel, entry) in manifest {
            let data = std::fs::read(self.path(&entry.hash))?;
            if sha256_hex(&data) != entry.hash {
                return Err(io::Error::other(format!("blob {} for {rel} is corrupt", entry.hash)));
            }
            let path = dest.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &data)?;
            // Owner keeps write access whatever the source mode was.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode | 0o200))?;
        }
        Ok(())
    }

    /// Delete blobs no manifest references; returns how many went.
    pub fn gc(&self, referenced: &BTreeSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.len() == 64 && !referenced.contains(&name) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_materialize_shares_and_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::new(tmp.path().join("blobs"));
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x"), "same").unwrap();
        std::fs::write(root.join("y"), "same").unwrap();
        let m = store.snapshot(&root).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["a/b/x"].hash, m["y"].hash);
        let dest = tmp.path().join("dest");
        store.materialize(&m, &dest).unwrap();
        std::fs::write(dest.join("y"), "changed").unwrap();
        let again = tmp.path().join("again");
        store.materialize(&m, &again).unwrap();
        assert_eq!(std::fs::read_to_string(again.join("y")).unwrap(), "same");
        assert_eq!(store.gc(&BTreeSet::new()).unwrap(), 1);
        assert!(store.materialize(&m, &tmp.path().join("gone")).is_err());
    }
}
