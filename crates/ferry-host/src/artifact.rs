//! Preparing a server group's artifact: what each source becomes on disk and which program the
//! instances run.
//!
//! - `Command`: nothing is copied. A bare program name is looked up on `PATH` when an instance
//!   starts; a path with a `/` is taken relative to Ferry's working directory (made absolute when
//!   the server group is created). A missing program is not an error here: the instances fail to
//!   start and say why in `last_exit` (`cannot start ./missing: No such file or directory`).
//! - `Executable`: the file is copied into `<server group>/artifact/` and made executable, so a
//!   later change to the original does not change a running version.
//! - `Tarball` (`.tar` or gzip-compressed): every entry is checked before anything is unpacked:
//!   no absolute paths, no `..`, no entry through or over a symbolic link, symbolic links only
//!   to places inside the tree, hard links only to paths inside it, no device or FIFO entries.
//!   Then it is unpacked into a temporary directory that is renamed to `<server group>/artifact/`.
//!   The command's program is looked up in the unpacked tree (a path with `/` is relative to it;
//!   a bare name is used from the tree when it is there, from `PATH` otherwise).
//! - `Image`: refused; container images are the Kubernetes provider's.
//!
//! Everything here blocks (copies, decompression); callers run it on the blocking pool.

use crate::persist::{ARTIFACT_DIR, LaunchRecord};
use ferry_provider::{Artifact, ArtifactSource};
use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// Why an artifact could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The source kind is not something the host provider runs.
    #[error("{0}")]
    Unsupported(String),
    /// The artifact is malformed (empty command, bad environment name).
    #[error("{0}")]
    Invalid(String),
    /// The executable or tarball named by the artifact cannot be read.
    #[error("cannot read {what} \"{path}\": {source}")]
    Source {
        /// `executable` or `tarball`.
        what: &'static str,
        /// The path as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tarball is not a tar archive (plain or gzip-compressed).
    #[error("\"{path}\" is not a tarball (.tar or .tar.gz): {reason}")]
    NotATarball {
        /// The path as given.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An entry of the tarball would write outside its directory or is not a plain file,
    /// directory or link; nothing was unpacked.
    #[error("tarball \"{path}\" refused: entry \"{entry}\" {reason}")]
    UnsafeEntry {
        /// The path as given.
        path: String,
        /// The entry's path.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing into the server group's directory failed.
    #[error("cannot prepare the artifact in {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks what can be checked without touching the disk.
pub(crate) fn check(artifact: &Artifact) -> Result<(), ArtifactError> {
    match &artifact.source {
        ArtifactSource::Image { image } => {
            return Err(ArtifactError::Unsupported(format!(
                "the host provider runs commands, executables and tarballs, not container images (\"{image}\"); use a Kubernetes account"
            )));
        }
        ArtifactSource::Command { command } | ArtifactSource::Tarball { command, .. } => {
            if command.first().is_none_or(|p| p.is_empty()) {
                return Err(ArtifactError::Invalid(
                    "artifact command is empty: give the program and its arguments as a list"
                        .into(),
                ));
            }
        }
        ArtifactSource::Executable { path, .. } => {
            if path.is_empty() {
                return Err(ArtifactError::Invalid("artifact path is empty".into()));
            }
        }
    }
    for key in artifact.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ArtifactError::Invalid(format!(
                "artifact env: \"{key}\" is not a valid variable name"
            )));
        }
    }
    if let Some((k, _)) = artifact.env.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ArtifactError::Invalid(format!(
            "artifact env: the value of {k} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Prepares `artifact` in `group_dir` and says how to launch it. `cwd` is Ferry's working
/// directory, against which relative command paths are resolved.
pub(crate) fn prepare(
    artifact: &Artifact,
    group_dir: &Path,
    cwd: &Path,
) -> Result<LaunchRecord, ArtifactError> {
    check(artifact)?;
    let dest = group_dir.join(ARTIFACT_DIR);
    let io = |source| ArtifactError::Io {
        dir: dest.clone(),
        source,
    };
    match &artifact.source {
        ArtifactSource::Command { command } => {
            let (program, args) = split(command)?;
            let resolved = if program.contains('/') {
                cwd.join(program)
            } else {
                PathBuf::from(program)
            };
            Ok(LaunchRecord {
                program: resolved,
                program_display: program.to_string(),
                args,
            })
        }
        ArtifactSource::Executable { path, args } => {
            let source = |e| ArtifactError::Source {
                what: "executable",
                path: path.clone(),
                source: e,
            };
            let meta = std::fs::metadata(path).map_err(source)?;
            if !meta.is_file() {
                return Err(source(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            let name = Path::new(path)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("program"));
            std::fs::create_dir_all(&dest).map_err(io)?;
            let target = dest.join(name);
            std::fs::copy(path, &target).map_err(source)?;
            set_executable(&target).map_err(io)?;
            Ok(LaunchRecord {
                program: target,
                program_display: path.clone(),
                args: args.clone(),
            })
        }
        ArtifactSource::Tarball { path, command } => {
            unpack_tarball(Path::new(path), path, &dest)?;
            let (program, args) = split(command)?;
            let in_tree = dest.join(program);
            let resolved = if Path::new(program).is_absolute() {
                PathBuf::from(program)
            } else if program.contains('/') || in_tree.is_file() {
                in_tree
            } else {
                PathBuf::from(program)
            };
            Ok(LaunchRecord {
                program: resolved,
                program_display: program.to_string(),
                args,
            })
        }
        ArtifactSource::Image { .. } => Err(ArtifactError::Unsupported(
            "container images are not supported by the host provider".into(),
        )),
    }
}

fn split(command: &[String]) -> Result<(&str, Vec<String>), ArtifactError> {
    match command.split_first() {
        Some((program, args)) if !program.is_empty() => Ok((program, args.to_vec())),
        _ => Err(ArtifactError::Invalid("artifact command is empty".into())),
    }
}

fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path)?.permissions();
    perms.set_mode(perms.mode() | 0o755);
    std::fs::set_permissions(path, perms)
}

/// Opens the tarball, decompressing gzip when the file starts with its magic bytes.
fn open_tarball(file: &Path, shown: &str) -> Result<tar::Archive<Box<dyn Read>>, ArtifactError> {
    let source = |e| ArtifactError::Source {
        what: "tarball",
        path: shown.to_string(),
        source: e,
    };
    let mut f = std::fs::File::open(file).map_err(source)?;
    if f.metadata().map_err(source)?.is_dir() {
        return Err(ArtifactError::NotATarball {
            path: shown.into(),
            reason: "it is a directory".into(),
        });
    }
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(source)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
            head.chain(f),
        )))
    } else {
        Box::new(BufReader::new(head.chain(f)))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    Ok(archive)
}

/// Checks every entry, then unpacks the tarball into `dest` (which must not exist yet).
fn unpack_tarball(file: &Path, shown: &str, dest: &Path) -> Result<(), ArtifactError> {
    let not_tar = |e: std::io::Error| ArtifactError::NotATarball {
        path: shown.into(),
        reason: e.to_string(),
    };
    // Pass 1: read and check every entry; nothing is written.
    let mut archive = open_tarball(file, shown)?;
    let mut symlinks = HashSet::new();
    let mut count = 0usize;
    for entry in archive.entries().map_err(not_tar)? {
        let entry = entry.map_err(not_tar)?;
        let path = entry.path().map_err(not_tar)?.into_owned();
        let link = entry.link_name().map_err(not_tar)?.map(|l| l.into_owned());
        check_entry(
            &path,
            entry.header().entry_type(),
            link.as_deref(),
            &mut symlinks,
        )
        .map_err(|reason| ArtifactError::UnsafeEntry {
            path: shown.into(),
            entry: path.display().to_string(),
            reason,
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(ArtifactError::NotATarball {
            path: shown.into(),
            reason: "it holds no entries".into(),
        });
    }
    // Pass 2: unpack into a fresh temporary directory, then move it into place.
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| ArtifactError::Io {
        dir: dest.to_path_buf(),
        source,
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io)?;
    }
    std::fs::create_dir_all(&tmp).map_err(io)?;
    let unpacked = (|| -> Result<(), ArtifactError> {
        let mut archive = open_tarball(file, shown)?;
        for entry in archive.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            if entry.header().entry_type() == EntryType::XGlobalHeader {
                continue;
            }
            let path = entry.path().map_err(not_tar)?.display().to_string();
            if !entry.unpack_in(&tmp).map_err(io)? {
                return Err(ArtifactError::UnsafeEntry {
                    path: shown.into(),
                    entry: path,
                    reason: "would be written outside the directory".into(),
                });
            }
        }
        Ok(())
    })();
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(io)
}

/// The normal components of a relative path, refusing absolute paths and `..`.
fn normal_components(path: &Path, what: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{what} contains \"..\"")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{what} is an absolute path"));
            }
        }
    }
    Ok(parts)
}

/// Checks one entry against the unpacking rules; `symlinks` collects the symbolic links seen.
fn check_entry(
    path: &Path,
    kind: EntryType,
    link: Option<&Path>,
    symlinks: &mut HashSet<Vec<String>>,
) -> Result<(), String> {
    let parts = normal_components(path, "its path")?;
    for n in 1..parts.len() {
        if symlinks.contains(&parts[..n]) {
            return Err(format!(
                "goes through the symbolic link \"{}\"",
                parts[..n].join("/")
            ));
        }
    }
    if symlinks.contains(&parts) {
        return Err("replaces a symbolic link of the same archive".into());
    }
    match kind {
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::Directory
        | EntryType::GNUSparse
        | EntryType::XGlobalHeader => Ok(()),
        EntryType::Symlink => {
            let target = link.ok_or("is a symbolic link without a target")?;
            if target.is_absolute() {
                return Err(format!(
                    "is a symbolic link to the absolute path \"{}\"",
                    target.display()
                ));
            }
            // Resolve lexically from the link's directory; it may never climb above the root.
            let mut depth = parts.len().saturating_sub(1) as i64;
            for c in target.components() {
                match c {
                    Component::ParentDir => depth -= 1,
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
                if depth < 0 {
                    return Err(format!(
                        "is a symbolic link leading outside the tree (\"{}\")",
                        target.display()
                    ));
                }
            }
            symlinks.insert(parts);
            Ok(())
        }
        EntryType::Link => {
            let target = link.ok_or("is a hard link without a target")?;
            let target_parts = normal_components(target, "its hard link target")?;
            for n in 1..=target_parts.len() {
                if symlinks.contains(&target_parts[..n]) {
                    return Err("is a hard link through a symbolic link".into());
                }
            }
            Ok(())
        }
        other => Err(format!(
            "is a special file ({other:?}); only files, directories and links are unpacked"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        path: &str,
        kind: EntryType,
        link: Option<&str>,
        seen: &mut HashSet<Vec<String>>,
    ) -> Result<(), String> {
        check_entry(Path::new(path), kind, link.map(Path::new), seen)
    }

    #[test]
    fn entries_are_checked() {
        let mut seen = HashSet::new();
        let ok = [
            ("bin/server", EntryType::Regular, None),
            ("./bin/", EntryType::Directory, None),
            ("lib/current", EntryType::Symlink, Some("../lib/v1")),
            ("a/b/c", EntryType::Symlink, Some("../../x")),
            ("bin/copy", EntryType::Link, Some("bin/server")),
        ];
        for (p, k, l) in ok {
            assert_eq!(check(p, k, l, &mut seen), Ok(()), "{p}");
        }
        let refused = [
            ("/etc/passwd", EntryType::Regular, None, "absolute"),
            ("../evil", EntryType::Regular, None, "\"..\""),
            ("a/../../evil", EntryType::Regular, None, "\"..\""),
            ("up", EntryType::Symlink, Some(".."), "outside"),
            ("x/up", EntryType::Symlink, Some("../../etc"), "outside"),
            ("abs", EntryType::Symlink, Some("/etc"), "absolute"),
            (
                "lib/current/file",
                EntryType::Regular,
                None,
                "through the symbolic link",
            ),
            ("lib/current", EntryType::Regular, None, "replaces"),
            ("hard", EntryType::Link, Some("../x"), "\"..\""),
            ("dev", EntryType::Char, None, "special"),
            ("fifo", EntryType::Fifo, None, "special"),
        ];
        for (p, k, l, why) in refused {
            let err = check(p, k, l, &mut seen).unwrap_err();
            assert!(err.contains(why), "{p}: {err}");
        }
    }

    #[test]
    fn commands_resolve_against_the_working_directory_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = |command: &[&str]| Artifact {
            name: "a".into(),
            version: "1".into(),
            source: ArtifactSource::Command {
                command: command.iter().map(|s| s.to_string()).collect(),
            },
            env: Default::default(),
        };
        let l = prepare(&artifact(&["sleep", "10"]), dir.path(), Path::new("/srv")).unwrap();
        assert_eq!(l.program, PathBuf::from("sleep"));
        assert_eq!(l.args, vec!["10"]);
        let l = prepare(&artifact(&["./run"]), dir.path(), Path::new("/srv")).unwrap();
        assert_eq!(l.program, PathBuf::from("/srv/./run"));
        assert_eq!(l.program_display, "./run");
        assert!(matches!(
            prepare(&artifact(&[]), dir.path(), Path::new("/")),
            Err(ArtifactError::Invalid(_))
        ));
        let image = Artifact {
            source: ArtifactSource::Image {
                image: "nginx".into(),
            },
            ..artifact(&["x"])
        };
        assert!(matches!(
            prepare(&image, dir.path(), Path::new("/")),
            Err(ArtifactError::Unsupported(_))
        ));
    }

    #[test]
    fn files_that_are_not_tarballs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("short.tar", b"hello, not a tarball\n".to_vec()),
            ("text.tar", "not a tarball\n".repeat(100).into_bytes()),
            ("empty.tar", Vec::new()),
            ("bad.tar.gz", vec![0x1f, 0x8b, 1, 2, 3, 4]),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = unpack_tarball(&path, name, &dir.path().join("out")).unwrap_err();
            assert!(
                matches!(err, ArtifactError::NotATarball { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("is not a tarball"), "{err}");
            assert!(!dir.path().join("out").exists());
        }
    }
}
