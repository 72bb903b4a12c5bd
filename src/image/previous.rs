//! The previous build of a site: the files of the image its Deployment runs,
//! each with its Git blob id and time, so a generated file that did not change
//! keeps its time ([`crate::image::FileTimes::with_previous`]).
//!
//! 1. After every push berth keeps the new image's index in the state folder
//!    (`files/<image digest>.json`), so the next build reads it from there.
//! 2. With an empty state folder (a CronJob's emptyDir, a fresh CI runner) the
//!    index is read out of the image itself: the pipeline has it pulled into
//!    the Engine if it is not there, then it is exported (`docker save`), and
//!    its layers read in order, the files below the web root hashed. It is then
//!    kept as in 1.
//!
//! The image is the truth, not a log of builds: what a Deployment runs after a
//! failed rollout, a rollback or a `kubectl set image` is what is indexed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bollard::Docker;
use futures_util::StreamExt;

use crate::image::FileIndex;
use crate::image::times::blob_id;
use crate::reference;

/// What can go wrong while finding the previous build's files. None of it
/// fails a ship: the files then get the commit's time, as with no previous build.
#[derive(Debug, thiserror::Error)]
pub enum PreviousError {
    /// The image could not be pulled or exported through the Engine.
    #[error("cannot read {image} through the Docker Engine: {cause}")]
    Engine { image: String, cause: ExportFailure },
    /// The exported image or a kept index could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The exported image is not in the format `docker save` writes.
    #[error("the export of {image} cannot be read: {source}")]
    Format {
        image: String,
        #[source]
        source: SavedError,
    },
}

/// Why the Engine did not give the image's files, for [`PreviousError::Engine`].
#[derive(Debug, thiserror::Error)]
pub enum ExportFailure {
    /// The export (`docker save`) failed.
    #[error("{0}")]
    Export(bollard::errors::Error),
    /// Reading the export stopped (a panic, or the runtime shut down).
    #[error("{0}")]
    Stopped(tokio::task::JoinError),
}

/// Why an image `docker save` wrote could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The tar (or a layer inside it) could not be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// Its `manifest.json` is not JSON.
    #[error("its manifest.json is not JSON: {0}")]
    Manifest(#[from] serde_json::Error),
    /// It has no `manifest.json` naming layers.
    #[error("no manifest.json with layers")]
    NoManifest,
}

/// The kept index of the image with manifest digest `digest`.
fn kept_path(state_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    state_dir.join("files").join(format!("{hex}.json"))
}

/// Keeps `index` as the files of the image with manifest digest `digest`.
pub fn keep(state_dir: &Path, digest: &str, index: &FileIndex) -> Result<(), PreviousError> {
    let path = kept_path(state_dir, digest);
    let io = |source| PreviousError::Io {
        path: path.clone(),
        source,
    };
    let mut files: Vec<(&String, String, u64)> = index
        .iter()
        .map(|(relative, (blob, time))| (relative, blob.to_string(), *time))
        .collect();
    files.sort();
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
    let text = serde_json::to_vec(&serde_json::json!({ "files": files })).map_err(|e| io(e.into()))?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)
}

fn read_kept(path: &Path) -> Option<FileIndex> {
    let text = std::fs::read(path).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    value["files"]
        .as_array()?
        .iter()
        .map(|file| {
            let relative = file[0].as_str()?.to_string();
            let blob = git2::Oid::from_str(file[1].as_str()?).ok()?;
            Some((relative, (blob, file[2].as_u64()?)))
        })
        .collect()
}

/// The kept index of `image` (`<repository>:<tag>@sha256:<digest>`), when
/// the state folder has one; `None` also for an image not pinned by digest.
pub fn kept(state_dir: &Path, image: &str) -> Option<FileIndex> {
    let (_, digest) = pinned(image)?;
    read_kept(&kept_path(state_dir, digest))
}

/// The image to have in the Engine for [`index_of`]: `image` pinned by its
/// digest alone (`<repository>@sha256:…`); `None` for an image not pinned.
pub fn to_read(image: &str) -> Option<String> {
    pinned(image).map(|(pinned, _)| pinned)
}

/// The files below `web_root` of `image` (`<repository>:<tag>@sha256:<digest>`),
/// read out of the Engine's image `id` (the pipeline has it pulled first,
/// [`to_read`]), and kept in the state folder for the next build.
pub async fn index_of(
    docker: &Docker,
    state_dir: &Path,
    image: &str,
    id: &str,
    web_root: &str,
) -> Result<FileIndex, PreviousError> {
    let Some((pinned, digest)) = pinned(image) else {
        return Ok(FileIndex::new());
    };
    let engine = |cause: ExportFailure| PreviousError::Engine {
        image: pinned.clone(),
        cause,
    };
    // `docker save` writes the image as one tar; it is spooled to a file,
    // since its manifest.json may come after the layers it orders.
    let spool = tempfile::tempfile_in(state_dir).map_err(|source| PreviousError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let mut writer = tokio::fs::File::from_std(spool.try_clone().map_err(|source| PreviousError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?);
    let mut export = docker.export_image(id);
    while let Some(chunk) = export.next().await {
        let chunk = chunk.map_err(|error| engine(ExportFailure::Export(error)))?;
        tokio::io::AsyncWriteExt::write_all(&mut writer, &chunk)
            .await
            .map_err(|source| PreviousError::Io {
                path: PathBuf::from("(exported image)"),
                source,
            })?;
    }
    tokio::io::AsyncWriteExt::flush(&mut writer)
        .await
        .map_err(|source| PreviousError::Io {
            path: PathBuf::from("(exported image)"),
            source,
        })?;
    let web_root = web_root.to_string();
    let index = tokio::task::spawn_blocking(move || read_saved(spool, &web_root))
        .await
        .map_err(|error| engine(ExportFailure::Stopped(error)))?
        .map_err(|source| PreviousError::Format {
            image: pinned.clone(),
            source,
        })?;
    keep(state_dir, digest, &index)?;
    Ok(index)
}

/// `image` pinned by its digest alone (`<repository>@sha256:…`, its tag left
/// off), and the digest; `None` when it names no digest.
fn pinned(image: &str) -> Option<(String, &str)> {
    let digest = reference::digest(image)?;
    Some((format!("{}@{digest}", reference::repository(image)), digest))
}

/// The files below `web_root` of the image `docker save` wrote to `saved`: its
/// layers applied in manifest order (a later layer's file, or whiteout, wins).
fn read_saved(mut saved: std::fs::File, web_root: &str) -> Result<FileIndex, SavedError> {
    use std::io::Seek;
    let rewind = |file: &mut std::fs::File| file.seek(std::io::SeekFrom::Start(0));
    let mut layers: Vec<String> = Vec::new();
    rewind(&mut saved)?;
    for entry in tar::Archive::new(&mut saved).entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "manifest.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            let manifest: serde_json::Value = serde_json::from_str(&text)?;
            layers = manifest[0]["Layers"]
                .as_array()
                .ok_or(SavedError::NoManifest)?
                .iter()
                .filter_map(|layer| layer.as_str().map(String::from))
                .collect();
            break;
        }
    }
    if layers.is_empty() {
        return Err(SavedError::NoManifest);
    }
    rewind(&mut saved)?;
    let mut by_layer: HashMap<String, Vec<LayerEntry>> = HashMap::new();
    for entry in tar::Archive::new(&mut saved).entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if layers.contains(&path) {
            by_layer.insert(path, layer_entries(entry, web_root)?);
        }
    }
    let mut index = FileIndex::new();
    for layer in &layers {
        for entry in by_layer.remove(layer).unwrap_or_default() {
            match entry {
                LayerEntry::File { relative, blob, time } => {
                    index.insert(relative, (blob, time));
                }
                LayerEntry::Removed(prefix) => index.retain(|relative, _| {
                    relative != &prefix && !relative.starts_with(&format!("{prefix}/"))
                }),
            }
        }
    }
    Ok(index)
}

/// One change a layer makes below the web root.
enum LayerEntry {
    File {
        relative: String,
        blob: git2::Oid,
        time: u64,
    },
    /// A whiteout: this path (and what is below it) is gone.
    Removed(String),
}

/// The files (and whiteouts) of one layer tar that lie below `web_root`.
fn layer_entries(layer: impl Read, web_root: &str) -> Result<Vec<LayerEntry>, SavedError> {
    let root = format!("{}/", web_root.trim_matches('/'));
    let mut found = Vec::new();
    for entry in tar::Archive::new(layer).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Some(relative) = path.trim_start_matches("./").strip_prefix(&root) else {
            continue;
        };
        let (folder, name) = relative.rsplit_once('/').map_or(("", relative), |(f, n)| (f, n));
        if let Some(removed) = name.strip_prefix(".wh.") {
            let gone = if folder.is_empty() {
                removed.to_string()
            } else {
                format!("{folder}/{removed}")
            };
            found.push(LayerEntry::Removed(gone));
            continue;
        }
        let relative = relative.to_string();
        let time = entry.header().mtime()?;
        // The same ids as the build gives its files (`image::blob_id`).
        let blob = match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let length = entry.size();
                blob_id(length, &mut entry)?
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default();
                let bytes = target.as_os_str().as_encoded_bytes();
                blob_id(bytes.len() as u64, bytes)?
            }
            _ => continue,
        };
        found.push(LayerEntry::File { relative, blob, time });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_pinned_by_its_digest_with_or_without_a_tag() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let pinned_as = |image: &str| pinned(image).map(|(pinned, digest)| (pinned, digest.to_string()));
        let expected = Some((format!("host:5000/site@{digest}"), digest.clone()));
        assert_eq!(pinned_as(&format!("host:5000/site:abc@{digest}")), expected);
        assert_eq!(
            pinned_as(&format!("host:5000/site@{digest}")),
            expected,
            "no tag: the registry's port stays"
        );
        assert_eq!(pinned_as("host:5000/site:abc"), None);
    }

    fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8], mtime: u64) {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, content).unwrap();
    }

    fn layer(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content, mtime) in files {
            append(&mut builder, path, content, *mtime);
        }
        builder.into_inner().unwrap()
    }

    fn blob(content: &[u8]) -> git2::Oid {
        git2::Oid::hash_object(git2::ObjectType::Blob, content).unwrap()
    }

    /// A `docker save` tar whose manifest.json comes last, as some Engines write it.
    fn saved(layers: &[(&str, Vec<u8>)]) -> std::fs::File {
        let mut outer = tar::Builder::new(Vec::new());
        for (name, bytes) in layers {
            append(&mut outer, name, bytes, 0);
        }
        let names: Vec<&str> = layers.iter().map(|(name, _)| *name).collect();
        let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": null, "Layers": names}]);
        append(&mut outer, "manifest.json", manifest.to_string().as_bytes(), 0);
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &outer.into_inner().unwrap()).unwrap();
        file
    }

    #[test]
    fn the_files_below_the_web_root_come_from_the_layers_in_order() {
        let base = layer(&[("bin/busybox", b"elf", 1), ("www/old.html", b"old", 2)]);
        let assets = layer(&[("www/style.css", b"css", 10), ("www/img/logo.svg", b"svg", 11)]);
        let pages = layer(&[
            ("www/index.html", b"home", 20),
            ("www/.wh.old.html", b"", 0),
            ("www/img/.wh.logo.svg", b"", 0),
        ]);
        let index = read_saved(
            saved(&[
                ("a/layer.tar", base),
                ("b/layer.tar", assets),
                ("c/layer.tar", pages),
            ]),
            "/www",
        )
        .unwrap();
        let mut paths: Vec<&String> = index.keys().collect();
        paths.sort();
        assert_eq!(paths, ["index.html", "style.css"]);
        assert_eq!(index["index.html"], (blob(b"home"), 20));
        assert_eq!(index["style.css"], (blob(b"css"), 10));
    }

    #[test]
    fn an_index_is_kept_and_read_back() {
        let state = tempfile::tempdir().unwrap();
        let index = FileIndex::from([("news/index.html".to_string(), (blob(b"news"), 7))]);
        keep(state.path(), "sha256:abc", &index).unwrap();
        assert_eq!(read_kept(&kept_path(state.path(), "sha256:abc")), Some(index));
        assert_eq!(read_kept(&kept_path(state.path(), "sha256:other")), None);
    }
}
