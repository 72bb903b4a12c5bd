//! A mirror's first pack, indexed on every core.
//!
//! libgit2 indexes a received pack on one thread: it inflates every object,
//! resolves every delta and hashes every result (SHA-1 with collision
//! detection) one after the other. `git index-pack` spreads the delta work over
//! all cores, so on a large repo `git clone --mirror` finished well ahead of
//! berth's first fetch (docs/benchmarks.md, workload 4a). gix-pack indexes a
//! pack the way git does, with the same collision-detecting SHA-1
//! (`sha1-checked`); on the benchmark's 4 MB, 59,000-object pack it took
//! 0.47 s where libgit2's indexer took 0.95 s and `git index-pack` 0.52 s.
//!
//! 1. [`install`] adds a backend to each opened mirror's object database, ahead
//!    of libgit2's own, through [`ffi`]; it offers nothing but writing a
//!    fetched pack. This module itself is safe code.
//! 2. When libgit2 asks to write the pack of a fetch (over any transport: http,
//!    https, ssh, git:// or a local path), the backend takes it only while the
//!    mirror holds no objects at all (and then first clears what a first fetch
//!    killed half-way left in `objects/pack`). A later fetch may send a thin
//!    pack, whose delta bases only the mirror has; that one passes to libgit2's
//!    indexer.
//! 3. The pack's bytes go through a bounded channel to a thread running
//!    gix-pack, which checks each object's CRC and the pack's checksum, hashes
//!    every object and writes `pack-<checksum>.pack` and `.idx` into
//!    `objects/pack`. libgit2 then writes the refs, as it would after its own
//!    indexer.
//! 4. A copy of the pack's bytes goes to an unnamed temporary file, and libgit2's
//!    indexer takes the pack over, copy first, in two cases. gix-pack maps the
//!    whole pack into memory while it resolves deltas (a 1 GB pack took the
//!    process to 1 GB resident), so a pack that grows past `PARALLEL_LIMIT`
//!    goes to libgit2, which reads through small windows (see
//!    [`ffi::bound_memory`]). And gix-pack refuses deltas whose base is named by
//!    id rather than by offset, which libgit2's own pack builder writes (a local
//!    path remote; servers built on libgit2); it refuses a broken pack too, and
//!    libgit2 then gives the error.
//! 5. A fetch that fails half-way (the connection drops, the pack is corrupt)
//!    leaves no pack behind: both indexers write to temporary files and only
//!    rename them once the index is complete.

use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::git::ffi;

/// Chunks of the pack (up to 64 KiB each, as side-band packets come) waiting for
/// the indexing thread: bounded, so a slow disk holds the download back instead
/// of filling memory.
const CHANNEL_DEPTH: usize = 64;
/// A pack starts with `PACK`, a version and its number of objects.
const HEADER_LENGTH: usize = 12;
/// The largest pack gix-pack indexes; larger ones go to libgit2's indexer, so
/// that a first mirror stays within berth's memory target (100 MB for a 1 GB
/// site, docs/benchmarks.md) with the rest of the process (about 30 MB).
const PARALLEL_LIMIT: u64 = 48 * 1024 * 1024;

/// Adds the backend to `git`'s object database, which owns it from then on.
/// It only ever takes a fetch's pack while the mirror holds no objects: on a
/// mirror just created, or one whose first fetch failed.
pub fn install(git: &git2::Repository) -> Result<(), git2::Error> {
    let objects = git.path().join("objects");
    ffi::add_pack_backend(git, FirstPack { objects })
}

/// The backend: it takes a fetch's pack while the mirror holds no objects.
struct FirstPack {
    /// The mirror's `objects` folder.
    objects: PathBuf,
}

/// A pack and index written by gix-pack.
struct Indexed {
    objects: u32,
    /// The `.pack` and `.idx` files.
    files: Vec<PathBuf>,
}

/// Why a first pack could not be indexed: the message libgit2 is handed as
/// the fetch's error (gix-pack's own errors go to libgit2's indexer, which
/// has the last word).
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The indexing thread panicked.
    #[error("the pack indexing thread panicked")]
    Panicked,
    /// The pack was finished once already.
    #[error("the pack was already finished")]
    Finished,
    /// gix-pack indexed the pack, and bytes came after its checksum.
    #[error("the pack goes on after its checksum")]
    Trailing,
    /// The copy of the pack, to hand libgit2's indexer, is gone.
    #[error("the copy of the pack is missing")]
    NoCopy,
    /// The pack was completed before any indexer took it.
    #[error("the pack has no indexer")]
    NoIndexer,
    /// libgit2's indexer failed.
    #[error("indexing the received pack: {}", .0.message())]
    Libgit2(git2::Error),
    /// The bytes could not be given to libgit2's indexer.
    #[error("indexing the received pack: {0}")]
    Feed(std::io::Error),
    /// The copy of the pack could not be written.
    #[error("cannot keep a copy of the received pack: {0}")]
    Copy(std::io::Error),
    /// gix-pack failed to index the pack.
    #[error("indexing the received pack: {}", chain(.0))]
    Gix(gix_pack::bundle::write::Error),
    /// A pack file written could not be made read-only.
    #[error("cannot make {} read-only: {error}", path.display())]
    ReadOnly { path: PathBuf, error: std::io::Error },
}

/// One pack being written.
struct PackWriter {
    /// Closed to tell the indexing thread the pack is complete.
    chunks: Option<SyncSender<Vec<u8>>>,
    /// Gives the pack written, or what went wrong.
    worker: Option<JoinHandle<Result<Indexed, PackError>>>,
    /// The first bytes of the pack, until its object count is known.
    header: Vec<u8>,
    /// Bytes received so far.
    received: u64,
    /// A copy of the bytes received, while the pack may still be handed over.
    copy: Option<std::fs::File>,
    /// libgit2's indexer, once the pack is handed over to it.
    fallback: Option<git2::Indexer<'static>>,
    /// The mirror's `objects/pack` folder.
    pack_folder: PathBuf,
}

impl PackWriter {
    /// Closes the channel and waits for the indexing thread's answer. The
    /// thread is never interrupted otherwise: gix-pack panics on a read that
    /// fails half-way through its buffer, and takes the channel's end for the
    /// end of the pack (an error if the pack is not complete).
    fn finish(&mut self) -> Result<Indexed, PackError> {
        self.chunks = None;
        match self.worker.take() {
            Some(worker) => worker.join().unwrap_or(Err(PackError::Panicked)),
            None => Err(PackError::Finished),
        }
    }

    /// Stops gix-pack and says why it stopped. Its temporary files go; a pack it
    /// completed anyway (bytes came after its checksum, or the fetch failed
    /// after the last byte) is removed too, as no ref will point into it.
    fn stop_parallel(&mut self) -> PackError {
        match self.finish() {
            Ok(indexed) => {
                for file in indexed.files {
                    let _ = std::fs::remove_file(file);
                }
                PackError::Trailing
            }
            Err(error) => error,
        }
    }

    /// Stops gix-pack (its temporary files go) and gives libgit2's indexer the
    /// bytes received so far, from the copy; `reason` says why, in the debug log.
    fn hand_over(&mut self, reason: &dyn std::fmt::Display) -> Result<(), PackError> {
        tracing::debug!(
            received = self.received,
            "libgit2's indexer takes the first pack: {reason}"
        );
        if self.worker.is_some() {
            self.stop_parallel();
        }
        let mut copy = self.copy.take().ok_or(PackError::NoCopy)?;
        let mut indexer =
            git2::Indexer::new(None, &self.pack_folder, 0, false).map_err(PackError::Libgit2)?;
        copy.seek(SeekFrom::Start(0))
            .and_then(|_| std::io::copy(&mut copy, &mut indexer))
            .map_err(PackError::Feed)?;
        self.fallback = Some(indexer);
        Ok(())
    }

    /// Takes the next bytes of the pack.
    fn take(&mut self, bytes: &[u8]) -> Result<(), PackError> {
        if self.fallback.is_none() && self.received + bytes.len() as u64 > PARALLEL_LIMIT {
            self.hand_over(&format!("it is larger than {} MiB", PARALLEL_LIMIT / 1_048_576))?;
        }
        if let Some(indexer) = self.fallback.as_mut() {
            return indexer.write_all(bytes).map_err(PackError::Feed);
        }
        self.received += bytes.len() as u64;
        if let Some(copy) = self.copy.as_mut() {
            copy.write_all(bytes).map_err(PackError::Copy)?;
        }
        let sent = self
            .chunks
            .as_ref()
            .is_some_and(|chunks| chunks.send(bytes.to_vec()).is_ok());
        if sent {
            return Ok(());
        }
        // gix-pack stopped reading: the pack holds what it does not take (deltas
        // whose base is named by id, as libgit2's own pack builder writes them),
        // is broken, or goes on after its checksum. libgit2 has the last word; the
        // copy already holds these bytes.
        let reason = self.stop_parallel();
        self.hand_over(&reason)
    }

    /// The pack is complete: waits for its index. Returns the number of objects,
    /// if known.
    fn complete(&mut self) -> Result<Option<u32>, PackError> {
        if self.fallback.is_none() {
            match self.finish() {
                Ok(indexed) => return Ok(Some(indexed.objects)),
                Err(reason) => self.hand_over(&reason)?,
            }
        }
        let indexer = self.fallback.take().ok_or(PackError::NoIndexer)?;
        indexer.commit().map(|_| None).map_err(PackError::Libgit2)
    }
}

/// Whether `objects` holds no object yet: no pack and no loose object folder.
fn holds_no_objects(objects: &Path) -> bool {
    let has_pack = std::fs::read_dir(objects.join("pack")).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            entry
                .path()
                .extension()
                .is_some_and(|extension| extension == "pack")
        })
    });
    let has_loose = std::fs::read_dir(objects).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.len() == 2 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
        })
    });
    !has_pack && !has_loose
}

/// Removes what a first fetch killed half-way left in the pack folder of a
/// mirror that holds no objects: temporary files (gix-pack's `.tmp*`,
/// libgit2's `pack_git2_*`), `.keep` files. With no `.pack` there, nothing in
/// it is of use, and the mirror's lock keeps any other berth out.
fn remove_leftovers(pack_folder: &Path) {
    let Ok(entries) = std::fs::read_dir(pack_folder) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            tracing::debug!(file = %entry.path().display(), "removing a leftover of an earlier first fetch");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl ffi::PackBackend for FirstPack {
    type Writer = PackWriter;

    fn start(&self) -> Option<PackWriter> {
        if !holds_no_objects(&self.objects) {
            return None;
        }
        let pack_folder = self.objects.join("pack");
        remove_leftovers(&pack_folder);
        // Unnamed: nothing of it stays behind, even if berth is killed.
        let copy = tempfile::tempfile_in(&self.objects).ok()?;
        let (sender, receiver) = sync_channel(CHANNEL_DEPTH);
        // No thread to spare: libgit2's own indexer takes the pack.
        let worker = std::thread::Builder::new()
            .name("index-pack".to_string())
            .spawn({
                let pack_folder = pack_folder.clone();
                move || index(receiver, &pack_folder)
            })
            .ok()?;
        Some(PackWriter {
            chunks: Some(sender),
            worker: Some(worker),
            header: Vec::with_capacity(HEADER_LENGTH),
            received: 0,
            copy: Some(copy),
            fallback: None,
            pack_folder,
        })
    }
}

impl ffi::PackWrite for PackWriter {
    type Error = PackError;

    fn append(&mut self, bytes: &[u8], progress: &mut ffi::PackProgress) -> Result<(), PackError> {
        if self.header.len() < HEADER_LENGTH {
            let wanted = (HEADER_LENGTH - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..wanted]);
            if let Some(count) = object_count(&self.header) {
                // The transport reports the bytes received; the objects are ours to report.
                progress.total_objects = count;
            }
        }
        self.take(bytes)
    }

    fn commit(&mut self, progress: &mut ffi::PackProgress) -> Result<(), PackError> {
        let count = self.complete()?.unwrap_or(progress.total_objects);
        *progress = ffi::PackProgress {
            total_objects: count,
            received_objects: count,
            indexed_objects: count,
        };
        Ok(())
    }
}

impl Drop for PackWriter {
    /// libgit2 is done with the writer, committed or not. An uncommitted
    /// `fallback` removes its temporary files when dropped; an abandoned
    /// gix-pack (the fetch failed) is stopped here.
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.stop_parallel();
        }
    }
}

/// The object count in a pack's header, once its 12 bytes are there.
fn object_count(header: &[u8]) -> Option<u32> {
    let count = header.get(8..HEADER_LENGTH)?;
    (header.starts_with(b"PACK")).then(|| u32::from_be_bytes([count[0], count[1], count[2], count[3]]))
}

/// The indexing thread: reads the pack from `chunks` and writes it, with its
/// index, into `pack_folder`. Returns the number of objects.
fn index(chunks: Receiver<Vec<u8>>, pack_folder: &Path) -> Result<Indexed, PackError> {
    let mut pack = BufReader::with_capacity(
        64 * 1024,
        ChannelReader {
            chunks,
            current: Vec::new(),
            position: 0,
        },
    );
    let outcome = gix_pack::Bundle::write_to_directory(
        &mut pack,
        Some(pack_folder),
        &mut gix_features::progress::Discard,
        &AtomicBool::new(false),
        None::<gix_object::find::Never>,
        gix_pack::bundle::write::Options {
            thread_limit: None,
            iteration_mode: gix_pack::data::input::Mode::Verify,
            index_version: gix_pack::index::Version::V2,
            object_hash: gix_hash::Kind::Sha1,
        },
    )
    .map_err(PackError::Gix)?;
    // The `.keep` file guards the pack against a concurrent `git gc` until refs
    // point into it; the mirror's lock already does that.
    if let Some(keep) = outcome.keep_path {
        let _ = std::fs::remove_file(keep);
    }
    // Read-only, as git and libgit2 leave their packs (gix-pack leaves them 0600).
    let files: Vec<PathBuf> = [outcome.data_path, outcome.index_path]
        .into_iter()
        .flatten()
        .collect();
    for path in &files {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o444)).map_err(
            |error| PackError::ReadOnly {
                path: path.clone(),
                error,
            },
        )?;
    }
    Ok(Indexed {
        objects: outcome.index.num_objects,
        files,
    })
}

/// An error and its causes, `: ` between them (gix-pack's say where it failed).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The receiving end of the channel as a byte stream; it ends when the sender is dropped.
struct ChannelReader {
    chunks: Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let count = buffer.len().min(self.current.len() - self.position);
        buffer[..count].copy_from_slice(&self.current[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_count_comes_from_a_complete_pack_header() {
        assert_eq!(object_count(b"PACK\0\0\0\x02\0\0\x01\x02"), Some(258));
        assert_eq!(object_count(b"PACK\0\0\0\x02\0\0"), None);
        assert_eq!(object_count(b"KCAP\0\0\0\x02\0\0\x01\x02"), None);
    }

    #[test]
    fn a_fresh_repository_holds_no_objects_and_one_with_a_commit_does() {
        let folder = tempfile::tempdir().unwrap();
        let git = git2::Repository::init_bare(folder.path()).unwrap();
        assert!(holds_no_objects(&git.path().join("objects")));
        git.blob(b"content").unwrap();
        assert!(!holds_no_objects(&git.path().join("objects")));
    }
}
