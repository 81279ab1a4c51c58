//! Zip archives of run inputs and outputs: checked unpacking, packing.
//!
//! An input zip comes from a user and is unpacked on the host (local
//! engine, Docker bind mounts) or in a helper container: every entry is
//! checked before anything is written. Refused: names with `..`, absolute
//! names (or drive prefixes), links of any kind (a link could point out of
//! the directory, and a later entry would write through it), and archives
//! beyond [`ZipLimits`] — total uncompressed size, file count and the
//! ratio of uncompressed to compressed bytes (zip bombs). Sizes are
//! enforced on the bytes actually inflated, not on what the archive
//! declares.

use std::io::{Cursor, Read, Write};
use std::path::{Component, Path, PathBuf};

use zip::ZipArchive;
use zip::write::SimpleFileOptions;

use crate::error::{Error, Result};

/// Limits on what an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    /// Total uncompressed bytes of all files. Default 1 GiB.
    pub max_total_bytes: u64,
    /// Files and directories. Default 10 000.
    pub max_entries: usize,
    /// Uncompressed bytes per compressed byte, for the whole archive and
    /// each file larger than 1 MiB. Default 200 (text compresses ~10:1;
    /// bombs reach 1000:1 and beyond).
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_total_bytes: 1 << 30,
            max_entries: 10_000,
            max_ratio: 200,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    /// Regular files written.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Files smaller than this are not held to the ratio on their own (a
/// small file of zeros compresses 1000:1 and is harmless).
const RATIO_FLOOR: u64 = 1 << 20;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("input zip: {what}"))
}

/// The safe relative path of an entry name, or why it is refused.
fn entry_path(name: &str) -> Result<PathBuf> {
    if name.contains('\0') {
        return Err(bad(format!("entry {name:?} has a NUL in its name")));
    }
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
        return Err(bad(format!(
            "entry {name:?} has an absolute path; entries must be relative"
        )));
    }
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                return Err(bad(format!(
                    "entry {name:?} contains '..'; entries must stay inside the directory"
                )));
            }
            p => out.push(p),
        }
    }
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(format!("entry {name:?} is not a plain relative path")));
    }
    Ok(out)
}

/// The checked entries of an archive: (path, is_dir), in order.
fn checked_entries<R: Read + std::io::Seek>(
    archive: &mut ZipArchive<R>,
    compressed_len: u64,
    limits: &ZipLimits,
) -> Result<Vec<(PathBuf, bool)>> {
    if archive.len() > limits.max_entries {
        return Err(bad(format!(
            "{} entries, more than the limit of {}",
            archive.len(),
            limits.max_entries
        )));
    }
    let mut declared: u64 = 0;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let file = archive
            .by_index_raw(i)
            .map_err(|e| bad(format!("entry {i} cannot be read: {e}")))?;
        let name = String::from_utf8_lossy(file.name_raw()).into_owned();
        let is_link = file.is_symlink()
            || file.unix_mode().is_some_and(|m| {
                m & 0o170000 != 0o100000 && m & 0o170000 != 0o040000 && m & 0o170000 != 0
            });
        if is_link {
            return Err(bad(format!(
                "entry {name:?} is a link (or another special file); only files and directories are accepted"
            )));
        }
        let path = entry_path(&name)?;
        declared = declared.saturating_add(file.size());
        out.push((path, file.is_dir()));
    }
    check_total(declared, limits)?;
    check_ratio(declared, compressed_len, "the archive", limits)?;
    Ok(out)
}

fn check_total(bytes: u64, limits: &ZipLimits) -> Result<()> {
    if bytes > limits.max_total_bytes {
        return Err(bad(format!(
            "it unpacks to more than {} bytes (the limit)",
            limits.max_total_bytes
        )));
    }
    Ok(())
}

fn check_ratio(bytes: u64, compressed: u64, what: &str, limits: &ZipLimits) -> Result<()> {
    if bytes > RATIO_FLOOR && bytes / compressed.max(1) > limits.max_ratio {
        return Err(bad(format!(
            "{what} expands {}:1, beyond the limit of {}:1 (a zip bomb?)",
            bytes / compressed.max(1),
            limits.max_ratio
        )));
    }
    Ok(())
}

/// Checks an archive without writing anything: every entry's name and
/// kind, the declared sizes against `limits`. [`unpack`] checks the same
/// and the real sizes as it inflates.
pub fn check(zip: &[u8], limits: &ZipLimits) -> Result<usize> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    Ok(checked_entries(&mut archive, zip.len() as u64, limits)?.len())
}

/// Unpacks `zip` into `dir` (created if absent), after checking every
/// entry (see the module). Sizes and ratios are enforced on the inflated
/// bytes; a refusal may leave part of the archive written.
pub fn unpack(zip: &[u8], dir: &Path, limits: &ZipLimits) -> Result<Unpacked> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let entries = checked_entries(&mut archive, zip.len() as u64, limits)?;
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let mut done = Unpacked::default();
    for (i, (rel, is_dir)) in entries.into_iter().enumerate() {
        let target = dir.join(&rel);
        if is_dir {
            std::fs::create_dir_all(&target).map_err(|e| io("creating", &target, e))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        let mut file = archive
            .by_index(i)
            .map_err(|e| bad(format!("entry {} cannot be read: {e}", rel.display())))?;
        let compressed = file.compressed_size();
        let left = limits.max_total_bytes - done.bytes.min(limits.max_total_bytes);
        // create_new: an earlier entry of the same name is not overwritten
        // through whatever it became.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| io("creating", &target, e))?;
        let mut limited = (&mut file).take(left.saturating_add(1));
        let written = std::io::copy(&mut limited, &mut out)
            .map_err(|e| bad(format!("entry {} cannot be inflated: {e}", rel.display())))?;
        out.flush().map_err(|e| io("writing", &target, e))?;
        done.bytes = done.bytes.saturating_add(written);
        done.files += 1;
        check_total(done.bytes, limits)?;
        check_ratio(
            written,
            compressed,
            &format!("entry {}", rel.display()),
            limits,
        )?;
        check_ratio(done.bytes, zip.len() as u64, "the archive", limits)?;
    }
    Ok(done)
}

/// Packs the regular files and directories under `dir` into a zip
/// (deflate), names relative to `dir`. Links are not followed and not
/// stored (a job's link to a host file must not carry that file out);
/// more than `limits.max_total_bytes` or `limits.max_entries` is refused.
pub fn pack(dir: &Path, limits: &ZipLimits) -> Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    let mut stack = vec![PathBuf::new()];
    let (mut entries, mut bytes) = (0usize, 0u64);
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let mut children: Vec<_> = std::fs::read_dir(&here)
            .map_err(|e| io("reading", &here, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| io("reading", &here, e))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let kind = child
                .file_type()
                .map_err(|e| io("reading", &child.path(), e))?;
            let name_rel = rel.join(child.file_name());
            let name = name_rel.to_string_lossy().replace('\\', "/");
            entries += 1;
            if entries > limits.max_entries {
                return Err(Error::invalid(format!(
                    "output: more than {} files and directories (the limit)",
                    limits.max_entries
                )));
            }
            if kind.is_dir() {
                writer
                    .add_directory(format!("{name}/"), options)
                    .map_err(|e| Error::internal(format!("output zip: {e}")))?;
                stack.push(name_rel);
            } else if kind.is_file() {
                let path = child.path();
                let len = child.metadata().map_err(|e| io("reading", &path, e))?.len();
                bytes = bytes.saturating_add(len);
                if bytes > limits.max_total_bytes {
                    return Err(Error::invalid(format!(
                        "output: more than {} bytes (the limit)",
                        limits.max_total_bytes
                    )));
                }
                let opts = options.large_file(len >= u64::from(u32::MAX));
                writer
                    .start_file(name, opts)
                    .map_err(|e| Error::internal(format!("output zip: {e}")))?;
                let mut f = std::fs::File::open(&path).map_err(|e| io("opening", &path, e))?;
                std::io::copy(&mut f, &mut writer).map_err(|e| io("reading", &path, e))?;
            }
        }
    }
    let out = writer
        .finish()
        .map_err(|e| Error::internal(format!("output zip: {e}")))?;
    Ok(out.into_inner())
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in entries {
            w.start_file(*name, o).expect("start");
            w.write_all(body).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    fn refused(zip: &[u8], limits: &ZipLimits, needle: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("in");
        for e in [
            check(zip, limits).expect_err("check refuses"),
            unpack(zip, &target, limits).expect_err("unpack refuses"),
        ] {
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
            assert!(e.message().contains(needle), "{needle:?} not in {e}");
        }
        assert!(
            !dir.path().join("evil").exists() && !Path::new("/tmp/flotilla-zip-escape").exists(),
            "nothing escaped"
        );
    }

    #[test]
    fn a_zip_round_trips_through_pack_and_unpack() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(src.path().join("a/b")).expect("mkdir");
        std::fs::write(src.path().join("top.txt"), b"top").expect("write");
        std::fs::write(src.path().join("a/b/deep.csv"), b"x,y\n1,2\n").expect("write");
        std::fs::create_dir(src.path().join("empty")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).expect("symlink");
        let zip = pack(src.path(), &ZipLimits::default()).expect("pack");
        let dst = tempfile::tempdir().expect("tempdir");
        let n = unpack(&zip, dst.path(), &ZipLimits::default()).expect("unpack");
        assert_eq!(n.files, 2);
        assert_eq!(n.bytes, 3 + 8);
        assert_eq!(
            std::fs::read(dst.path().join("top.txt")).expect("read"),
            b"top"
        );
        assert_eq!(
            std::fs::read(dst.path().join("a/b/deep.csv")).expect("read"),
            b"x,y\n1,2\n"
        );
        assert!(dst.path().join("empty").is_dir());
        assert!(
            std::fs::symlink_metadata(dst.path().join("link")).is_err(),
            "links are not packed"
        );
    }

    #[test]
    fn a_zip_with_dot_dot_paths_is_refused() {
        let zip = zip_of(&[("ok.txt", b"1"), ("../evil", b"x")]);
        refused(&zip, &ZipLimits::default(), "contains '..'");
        let zip = zip_of(&[("a/../../evil", b"x")]);
        refused(&zip, &ZipLimits::default(), "contains '..'");
    }

    #[test]
    fn a_zip_with_absolute_paths_is_refused() {
        let zip = zip_of(&[("/tmp/flotilla-zip-escape", b"x")]);
        refused(&zip, &ZipLimits::default(), "absolute path");
        let zip = zip_of(&[("C:/evil", b"x")]);
        refused(&zip, &ZipLimits::default(), "absolute path");
    }

    #[test]
    fn a_zip_with_a_symlink_is_refused() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = SimpleFileOptions::default();
        w.add_symlink("evil", "/etc", o).expect("symlink");
        w.start_file("evil/passwd", o).expect("start");
        w.write_all(b"pwned").expect("write");
        let zip = w.finish().expect("finish").into_inner();
        refused(&zip, &ZipLimits::default(), "is a link");
    }

    #[test]
    fn a_zip_bomb_is_refused_by_ratio_and_by_size() {
        let zeros = vec![0u8; 8 << 20];
        let zip = zip_of(&[("bomb", &zeros)]);
        assert!(
            zip.len() < 100_000,
            "deflate packs zeros tightly: {}",
            zip.len()
        );
        refused(&zip, &ZipLimits::default(), "a zip bomb");
        let small = ZipLimits {
            max_total_bytes: 1 << 20,
            max_ratio: u64::MAX,
            ..ZipLimits::default()
        };
        refused(&zip, &small, "more than 1048576 bytes");
    }

    #[test]
    fn a_zip_lying_about_its_sizes_is_stopped_while_inflating() {
        let zeros = vec![0u8; 4 << 20];
        let mut zip = zip_of(&[("liar", &zeros)]);
        // Patch the declared uncompressed size (central directory and local
        // header) down to 10 bytes.
        let real = (4u32 << 20).to_le_bytes();
        let fake = 10u32.to_le_bytes();
        let mut patched = 0;
        for i in 0..zip.len().saturating_sub(4) {
            if zip[i..i + 4] == real {
                zip[i..i + 4].copy_from_slice(&fake);
                patched += 1;
            }
        }
        assert!(patched >= 1, "size field found");
        let limits = ZipLimits {
            max_total_bytes: 1 << 20,
            max_ratio: u64::MAX,
            ..ZipLimits::default()
        };
        assert!(check(&zip, &limits).is_ok(), "the declared sizes pass");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = unpack(&zip, dir.path(), &limits).expect_err("the real size does not");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        let written = std::fs::metadata(dir.path().join("liar")).map_or(0, |m| m.len());
        assert!(written <= (1 << 20) + 1, "stopped at the limit: {written}");
    }

    #[test]
    fn a_zip_with_too_many_files_is_refused() {
        let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let zip = zip_of(&entries);
        let limits = ZipLimits {
            max_entries: 10,
            ..ZipLimits::default()
        };
        refused(&zip, &limits, "11 entries, more than the limit of 10");
    }

    #[test]
    fn garbage_is_not_a_zip() {
        refused(b"hello", &ZipLimits::default(), "not a zip archive");
    }

    #[test]
    fn packing_refuses_more_than_the_limits() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("big"), vec![1u8; 2048]).expect("write");
        let limits = ZipLimits {
            max_total_bytes: 1024,
            ..ZipLimits::default()
        };
        let e = pack(src.path(), &limits).expect_err("too big");
        assert!(e.message().contains("more than 1024 bytes"), "{e}");
    }
}
