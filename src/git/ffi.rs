//! All of berth's `unsafe`: libgit2's global options, and a pack-writing
//! backend for a mirror's object database, both behind safe functions. The
//! rest of the crate forbids `unsafe`.
//!
//! 1. [`start_without_ca_bundle`], [`bound_memory`], [`load_ca_bundle_once`]
//!    and [`limit_silence_once`] set libgit2's process-wide options; the first
//!    two run at start, while berth has one thread, the others once, before
//!    the first fetch that needs them.
//! 2. [`add_pack_backend`] puts a [`PackBackend`] ahead of libgit2's own
//!    backends in a repository's object database. When libgit2 asks the
//!    database to write a fetched pack, the backend may take it
//!    ([`PackBackend::start`]) or pass it to libgit2's own indexer; a
//!    [`PackWrite`] then gets the pack's bytes and its end, safely. Dropping
//!    the writer without a commit means the fetch was abandoned.

#![allow(
    unsafe_code,
    reason = "the one module with unsafe: libgit2 calls git2 does not wrap"
)]

use std::ffi::{CString, c_int, c_void};
use std::path::PathBuf;
use std::time::Duration;

use git2::Binding as _;
use libgit2_sys as raw;

/// Starts libgit2 without OpenSSL's CA bundle: libgit2 loads the whole bundle
/// as it starts (30–40 ms, more than the rest of a no-change `berth mirror`),
/// though only https remotes need it; [`load_ca_bundle_once`] loads it before the
/// first https fetch. Its object cache is off: it helps nothing berth does
/// (each object is read once).
///
/// Call it first thing in `main`, before any other thread exists.
pub fn start_without_ca_bundle() {
    let configured = std::env::var_os("SSL_CERT_FILE");
    // SAFETY: at start, before any other thread exists (the caller's promise).
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
    git2::opts::enable_caching(false);
    // SAFETY: as above; berth's children see the variable as it was.
    unsafe {
        match configured {
            Some(file) => std::env::set_var("SSL_CERT_FILE", file),
            None => std::env::remove_var("SSL_CERT_FILE"),
        }
    }
}

/// libgit2 maps pack files in windows of up to 1 GiB and keeps up to 8 GiB
/// mapped; reading a large site's blobs then counts the whole pack as resident
/// memory. Small windows and a small mapped limit keep berth's memory flat in
/// site size. Call it at start, before any thread uses libgit2.
pub fn bound_memory() {
    // SAFETY: called once at start, before any thread uses libgit2.
    unsafe {
        let _ = git2::opts::set_mwindow_size(8 << 20);
        let _ = git2::opts::set_mwindow_mapped_limit(32 << 20);
    }
}

/// Whether [`load_ca_bundle_once`] ran.
static CA_BUNDLE: std::sync::Once = std::sync::Once::new();

/// Points libgit2's TLS at the CA bundle `file` names, the first time it is
/// called; later calls do nothing.
pub fn load_ca_bundle_once(file: impl FnOnce() -> Option<PathBuf>) {
    CA_BUNDLE.call_once(|| {
        if let Some(file) = file() {
            // SAFETY: every https fetch waits here first, so no TLS connection to an
            // https remote uses the certificate store while it is filled; one that an
            // http remote was redirected to may, and fails its check (the store is
            // empty until then); OpenSSL locks the store.
            if let Err(error) = unsafe { git2::opts::set_ssl_cert_file(&file) } {
                tracing::warn!("cannot load the CA bundle {}: {error}", file.display());
            }
        }
    });
}

/// Whether libgit2 has its CA bundle.
pub fn ca_bundle_loaded() -> bool {
    CA_BUNDLE.is_completed()
}

/// Sets libgit2's limits on opening a connection and on a server's silence
/// (every socket libgit2 opens: http, https, git://, and ssh through
/// libssh2), the first time it is called; later calls do nothing.
pub fn limit_silence_once(connect: Duration, silence: Duration) {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let milliseconds = |limit: Duration| i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: every fetch waits here first, so no connection is opened while
        // the two integers are set (libgit2 reads them as it opens a stream).
        let set = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(milliseconds(connect))
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(milliseconds(silence)))
        };
        if let Err(error) = set {
            tracing::warn!("cannot limit how long a Git server may stay silent: {error}");
        }
    });
}

/// Progress counts libgit2 shows for a pack being written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackProgress {
    pub total_objects: u32,
    pub received_objects: u32,
    pub indexed_objects: u32,
}

/// A backend that may write the packs fetches bring.
pub trait PackBackend: Send + 'static {
    type Writer: PackWrite;
    /// A writer for a fetch's pack, or `None` to leave it to libgit2's own
    /// indexer. libgit2 holds the database's lock meanwhile, so this must not
    /// call back into the database.
    fn start(&self) -> Option<Self::Writer>;
}

/// One pack being written. Dropped without [`PackWrite::commit`], the fetch
/// was abandoned.
pub trait PackWrite: 'static {
    /// Why writing the pack failed: libgit2 is handed its message, as the
    /// error of the fetch.
    type Error: std::fmt::Display;
    /// The pack's next bytes; may set `progress.total_objects`.
    fn append(&mut self, bytes: &[u8], progress: &mut PackProgress) -> Result<(), Self::Error>;
    /// The pack is complete: index it; may set the counts of `progress`.
    fn commit(&mut self, progress: &mut PackProgress) -> Result<(), Self::Error>;
}

/// Above libgit2's own backends (loose objects 1, packs 2), so it is asked first.
const PRIORITY: c_int = 10;

/// libgit2's struct first, so a pointer to one is a pointer to the other.
#[repr(C)]
struct Backend<B> {
    parent: raw::git_odb_backend,
    backend: B,
}

#[repr(C)]
struct Writer<W> {
    parent: raw::git_odb_writepack,
    writer: W,
}

/// Adds `backend` to `git`'s object database, which owns it from then on.
pub fn add_pack_backend<B: PackBackend>(git: &git2::Repository, backend: B) -> Result<(), git2::Error> {
    let odb = git.odb()?;
    let boxed = Box::new(Backend {
        parent: raw::git_odb_backend {
            version: raw::GIT_ODB_BACKEND_VERSION,
            odb: std::ptr::null_mut(),
            read: None,
            read_prefix: None,
            read_header: None,
            write: None,
            writestream: None,
            readstream: None,
            exists: None,
            exists_prefix: None,
            refresh: None,
            foreach: None,
            writepack: Some(start_pack::<B>),
            writemidx: None,
            freshen: None,
            free: Some(free_backend::<B>),
        },
        backend,
    });
    let pointer = Box::into_raw(boxed);
    // SAFETY: `odb` is alive for the call; `pointer` is a valid, unowned backend
    // whose first field is the C struct. On success libgit2 owns it and calls
    // `free_backend` when the database goes; on failure it is still ours.
    let code = unsafe { raw::git_odb_add_backend(odb.raw(), pointer.cast(), PRIORITY) };
    if code < 0 {
        // SAFETY: libgit2 refused it, so nothing else holds the pointer.
        drop(unsafe { Box::from_raw(pointer) });
        return Err(git2::Error::last_error(code));
    }
    Ok(())
}

extern "C" fn start_pack<B: PackBackend>(
    out: *mut *mut raw::git_odb_writepack,
    backend: *mut raw::git_odb_backend,
    _odb: *mut raw::git_odb,
    _progress: raw::git_indexer_progress_cb,
    _payload: *mut c_void,
) -> c_int {
    // SAFETY: libgit2 passes back the backend `add_pack_backend` gave it.
    let ours = unsafe { &(*backend.cast::<Backend<B>>()).backend };
    let Some(writer) = ours.start() else {
        return raw::GIT_PASSTHROUGH;
    };
    let boxed = Box::new(Writer {
        parent: raw::git_odb_writepack {
            backend,
            append: Some(append::<B::Writer>),
            commit: Some(commit::<B::Writer>),
            free: Some(free_pack::<B::Writer>),
        },
        writer,
    });
    // SAFETY: `out` is libgit2's slot for the writer; it calls `free_pack` on it.
    unsafe { *out = Box::into_raw(boxed).cast() };
    0
}

fn progress_of(stats: &raw::git_indexer_progress) -> PackProgress {
    PackProgress {
        total_objects: stats.total_objects,
        received_objects: stats.received_objects,
        indexed_objects: stats.indexed_objects,
    }
}

fn set_progress(stats: &mut raw::git_indexer_progress, progress: PackProgress) {
    stats.total_objects = progress.total_objects;
    stats.received_objects = progress.received_objects;
    stats.indexed_objects = progress.indexed_objects;
}

extern "C" fn append<W: PackWrite>(
    writer: *mut raw::git_odb_writepack,
    data: *const c_void,
    size: usize,
    stats: *mut raw::git_indexer_progress,
) -> c_int {
    if size == 0 {
        // `data` may then be null, which no slice may be made from.
        return 0;
    }
    // SAFETY: the writer is the `Writer<W>` `start_pack` made; `data` holds
    // `size` bytes for the call; `stats` is libgit2's progress record.
    let (writer, bytes, stats) = unsafe {
        (
            &mut (*writer.cast::<Writer<W>>()).writer,
            std::slice::from_raw_parts(data.cast::<u8>(), size),
            &mut *stats,
        )
    };
    let mut progress = progress_of(stats);
    let result = writer.append(bytes, &mut progress);
    set_progress(stats, progress);
    match result {
        Ok(()) => 0,
        Err(error) => fail(&error.to_string()),
    }
}

extern "C" fn commit<W: PackWrite>(
    writer: *mut raw::git_odb_writepack,
    stats: *mut raw::git_indexer_progress,
) -> c_int {
    // SAFETY: as in `append`.
    let (writer, stats) = unsafe { (&mut (*writer.cast::<Writer<W>>()).writer, &mut *stats) };
    let mut progress = progress_of(stats);
    let result = writer.commit(&mut progress);
    set_progress(stats, progress);
    match result {
        Ok(()) => 0,
        Err(error) => fail(&error.to_string()),
    }
}

extern "C" fn free_pack<W: PackWrite>(writer: *mut raw::git_odb_writepack) {
    if !writer.is_null() {
        // SAFETY: made by `Box::into_raw` in `start_pack`; libgit2 frees it once.
        drop(unsafe { Box::from_raw(writer.cast::<Writer<W>>()) });
    }
}

extern "C" fn free_backend<B: PackBackend>(backend: *mut raw::git_odb_backend) {
    // SAFETY: made by `Box::into_raw` in `add_pack_backend`; libgit2 frees it once.
    drop(unsafe { Box::from_raw(backend.cast::<Backend<B>>()) });
}

/// Hands `message` to libgit2 as the error of the failing call.
fn fail(message: &str) -> c_int {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid C string, copied by libgit2.
    unsafe {
        raw::git_error_set_str(raw::GIT_ERROR_INDEXER.cast_signed(), message.as_ptr());
    }
    -1
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a test backend saw: the bytes of each pack, whether it was
    /// committed, and whether its writer was dropped.
    #[derive(Default)]
    struct Seen {
        bytes: Vec<u8>,
        committed: bool,
        dropped: bool,
    }

    /// Takes the pack only when `take`; a writer that refuses to commit
    /// when `refuse`, else indexes the pack with libgit2's indexer into
    /// `pack_folder`, so the fetch can write its refs.
    struct Recorder {
        take: bool,
        refuse: bool,
        seen: Arc<Mutex<Seen>>,
        pack_folder: std::path::PathBuf,
    }

    struct RecordingWriter {
        refuse: bool,
        seen: Arc<Mutex<Seen>>,
        pack_folder: std::path::PathBuf,
    }

    impl PackBackend for Recorder {
        type Writer = RecordingWriter;
        fn start(&self) -> Option<RecordingWriter> {
            self.take.then(|| RecordingWriter {
                refuse: self.refuse,
                seen: self.seen.clone(),
                pack_folder: self.pack_folder.clone(),
            })
        }
    }

    impl PackWrite for RecordingWriter {
        type Error = String;
        fn append(&mut self, bytes: &[u8], progress: &mut PackProgress) -> Result<(), String> {
            self.seen.lock().unwrap().bytes.extend_from_slice(bytes);
            progress.total_objects = 7;
            Ok(())
        }
        fn commit(&mut self, progress: &mut PackProgress) -> Result<(), String> {
            if self.refuse {
                return Err("refused by the test".into());
            }
            let mut seen = self.seen.lock().unwrap();
            let mut indexer =
                git2::Indexer::new(None, &self.pack_folder, 0, false).map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut indexer, &seen.bytes).map_err(|e| e.to_string())?;
            indexer.commit().map_err(|e| e.to_string())?;
            seen.committed = true;
            *progress = PackProgress {
                total_objects: 3,
                received_objects: 3,
                indexed_objects: 3,
            };
            Ok(())
        }
    }

    impl Drop for RecordingWriter {
        fn drop(&mut self) {
            self.seen.lock().unwrap().dropped = true;
        }
    }

    /// A repo with one commit, and an empty bare repo that fetches from it
    /// through the backend.
    fn fetch_through(take: bool, refuse: bool) -> (Result<(), git2::Error>, Seen, bool) {
        let folder = tempfile::tempdir().unwrap();
        let source = git2::Repository::init(folder.path().join("source")).unwrap();
        let blob = source.blob(b"hello").unwrap();
        let mut tree = source.treebuilder(None).unwrap();
        tree.insert("index.html", blob, 0o100_644).unwrap();
        let tree = source.find_tree(tree.write().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@example.com").unwrap();
        source
            .commit(Some("HEAD"), &signature, &signature, "one", &tree, &[])
            .unwrap();
        let mirror = git2::Repository::init_bare(folder.path().join("mirror")).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let recorder = Recorder {
            take,
            refuse,
            seen: seen.clone(),
            pack_folder: mirror.path().join("objects/pack"),
        };
        add_pack_backend(&mirror, recorder).unwrap();
        let url = format!("file://{}", folder.path().join("source").display());
        let result =
            mirror
                .remote_anonymous(&url)
                .unwrap()
                .fetch(&["+refs/heads/*:refs/heads/*"], None, None);
        let has_objects = mirror.find_blob(blob).is_ok();
        drop(mirror);
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        (result, seen, has_objects)
    }

    #[test]
    fn a_backend_that_takes_the_pack_gets_all_its_bytes_and_its_end() {
        let (result, seen, _) = fetch_through(true, false);
        assert!(result.is_ok(), "{result:?}");
        assert!(
            seen.bytes.starts_with(b"PACK"),
            "the pack's bytes, from its header"
        );
        assert!(seen.committed && seen.dropped);
    }

    #[test]
    fn a_backend_that_passes_leaves_the_pack_to_libgit2() {
        let (result, seen, has_objects) = fetch_through(false, false);
        assert!(result.is_ok(), "{result:?}");
        assert!(seen.bytes.is_empty() && !seen.committed);
        assert!(has_objects, "libgit2's own indexer wrote the pack");
    }

    #[test]
    fn a_writer_that_fails_fails_the_fetch_with_its_words() {
        let (result, seen, _) = fetch_through(true, true);
        let error = result.unwrap_err();
        assert!(error.message().contains("refused by the test"), "{error}");
        assert!(!seen.committed && seen.dropped, "the writer is freed");
    }
}
