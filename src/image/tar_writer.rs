//! Tar writing for the build context: headers with fixed owners and times,
//! layer tars nested with their exact size, and readers that fail a file
//! that changes while it is read.
use sha2::{Digest, Sha256};

use crate::image::collect::{Item, ItemKind};
use crate::image::{BuildError, Content};

/// Writes one layer tar to `sink`: the folders of `web_root`, then `items` under
/// it, folders stamped with `folder_time`. Returns the number of files and of
/// bytes. A `dry` pass writes zeros for the files' content without reading it, to
/// learn the size.
pub(crate) fn write_layer_tar<'a, W: std::io::Write>(
    items: impl Iterator<Item = &'a Item>,
    content: Content<'_>,
    web_root: &str,
    folder_time: u64,
    sink: W,
    dry: bool,
) -> Result<(usize, u64), BuildError> {
    let mut counting = CountingWriter {
        inner: sink,
        bytes: 0,
    };
    let mut builder = tar::Builder::new(&mut counting);
    builder.mode(tar::HeaderMode::Deterministic);
    let root = web_root.trim_matches('/');
    let mut prefix = String::new();
    for part in root.split('/').filter(|p| !p.is_empty()) {
        prefix.push_str(part);
        append_directory(&mut builder, &prefix, folder_time).map_err(BuildError::sink)?;
        prefix.push('/');
    }
    let files = append_items(&mut builder, items, content, &prefix, folder_time, dry)?;
    builder.finish().map_err(BuildError::sink)?;
    drop(builder);
    Ok((files, counting.bytes))
}

/// Counts the bytes that go through it.
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) bytes: u64,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what goes through it; `inner` counts it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: CountingWriter<W>,
    pub(crate) hasher: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header
}

pub(crate) fn append_bytes<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mode: u32,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, mtime, data.len() as u64);
    builder.append_data(&mut header, name, data)
}

pub(crate) fn append_directory<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0o755, mtime, 0);
    builder.append_data(&mut header, format!("{name}/"), std::io::empty())
}

/// Appends `items` under `prefix`, folders stamped with `folder_time`. Returns the
/// number of files. A `dry` pass writes zeros instead of the files' content.
pub(crate) fn append_items<'a, W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    items: impl Iterator<Item = &'a Item>,
    content: Content<'_>,
    prefix: &str,
    folder_time: u64,
    dry: bool,
) -> Result<usize, BuildError> {
    let mut files = 0;
    for item in items {
        let name = format!("{prefix}{}", item.relative);
        match &item.kind {
            ItemKind::Directory => {
                append_directory(builder, &name, folder_time)
                    .map_err(|e| BuildError::context(&item.path, e))?;
            }
            ItemKind::Symlink(target) => {
                let mut header = header(tar::EntryType::Symlink, 0o777, item.time, 0);
                builder
                    .append_link(&mut header, &name, target)
                    .map_err(|e| BuildError::context(&item.path, e))?;
            }
            ItemKind::File { executable, length } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut header = header(tar::EntryType::Regular, mode, item.time, *length);
                let data: Box<dyn std::io::Read> = match (dry, content, item.blob) {
                    (true, ..) => Box::new(std::io::Read::take(std::io::repeat(0), *length)),
                    (false, Content::Tree { read, .. }, Some(blob)) => Box::new(std::io::Cursor::new(
                        read(blob).map_err(|e| BuildError::context(&item.path, e))?,
                    )),
                    _ => Box::new(
                        std::fs::File::open(&item.path).map_err(|e| BuildError::context(&item.path, e))?,
                    ),
                };
                // A file whose size changed since it was listed would make a broken tar.
                let data = Exact {
                    inner: data,
                    remaining: *length,
                };
                builder
                    .append_data(&mut header, &name, data)
                    .map_err(|e| BuildError::context(&item.path, e))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

/// Reads exactly `remaining` bytes from `inner`: fewer is an error, more are left.
pub(crate) struct Exact<R> {
    pub(crate) inner: R,
    pub(crate) remaining: u64,
}

impl<R: std::io::Read> std::io::Read for Exact<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let read = self.inner.read(&mut buffer[..limit])?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file became {} bytes shorter while it was read",
                    self.remaining
                ),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}
