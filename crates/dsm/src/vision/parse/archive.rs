//! The zip side: finding the CSV entry, and inflating it whole (libdeflate) or in chunks
//! (flate2), with buffers reused across files.

use super::*;

/// Size of the inflate buffer when streaming.
pub(super) const CHUNK: usize = 256 * 1024;

/// CSV entries up to this size are inflated whole with libdeflate (about twice as fast as
/// streaming zlib); larger ones (trades, some monthly files) stream through flate2 in [`CHUNK`]s
/// so memory stays bounded. Every kline file fits (a day of 1s is ~13 MB).
pub(super) const WHOLE_MAX: u64 = 64 << 20;

/// Inflate buffers kept for the next file. A fresh buffer for a day of 1s candles (13 MB) pays a
/// page fault for each of its ~3,000 pages on every file; a reused one pays none. At most
/// [`SPARE_BUFFERS`] are kept, each at most [`SPARE_MAX_BYTES`], so this holds at most 64 MiB,
/// and no more buffers than files were ever parsed at once.
pub(super) static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
pub(super) const SPARE_BUFFERS: usize = 4;
pub(super) const SPARE_MAX_BYTES: usize = 16 << 20;

/// A buffer of `len` initialised bytes, reused if one is spare.
pub(super) fn take_buffer(len: usize) -> Vec<u8> {
    let mut buf = SPARE
        .lock()
        .ok()
        .and_then(|mut s| s.pop())
        .unwrap_or_default();
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
    buf
}

/// Keeps `buf` for [`take_buffer`] if it is small enough and there is room.
pub(super) fn give_back(buf: Vec<u8>) {
    if buf.capacity() <= SPARE_MAX_BYTES
        && let Ok(mut spare) = SPARE.lock()
        && spare.len() < SPARE_BUFFERS
    {
        spare.push(buf);
    }
}

/// Picks the CSV entry: the one named like the zip, else the only `.csv` entry; junk such as
/// `__MACOSX/` and directories is ignored.
pub(super) fn csv_entry(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    key: &FileKey,
) -> Result<usize, String> {
    let expected = key.file_name().replace(".zip", ".csv");
    let mut candidates = Vec::new();
    for i in 0..archive.len() {
        let Some(Ok(name)) = archive.name_for_index(i) else {
            continue;
        };
        let name: &str = &name;
        let base = name.rsplit('/').next().unwrap_or(name);
        if name.starts_with("__MACOSX/") || base.starts_with("._") || name.ends_with('/') {
            continue;
        }
        if !base.to_ascii_lowercase().ends_with(".csv") {
            continue;
        }
        if base == expected {
            return Ok(i);
        }
        candidates.push(i);
    }
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no CSV entry (expected {expected})")),
        _ => Err(format!(
            "{} CSV entries and none named {expected}",
            candidates.len()
        )),
    }
}

/// The CSV entry located in the in-memory zip (no zip-reader buffering layers): its raw data and
/// the central directory's uncompressed size and CRC-32, which are always checked.
pub(super) struct Entry<'z> {
    /// The entry's compressed (or stored) data.
    pub(super) data: &'z [u8],
    pub(super) deflated: bool,
    pub(super) size: u64,
    pub(super) crc: u32,
}

impl<'z> Entry<'z> {
    pub(super) fn open(
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        bytes: &'z [u8],
        index: usize,
    ) -> Result<Entry<'z>, String> {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| format!("cannot open the CSV entry: {e}"))?;
        if entry.encrypted() {
            return Err("the CSV entry is encrypted".into());
        }
        let deflated = match entry.compression() {
            zip::CompressionMethod::Stored => false,
            zip::CompressionMethod::Deflated => true,
            other => return Err(format!("unsupported compression method {other}")),
        };
        let data = entry
            .data_start()
            .and_then(|start| {
                let start = usize::try_from(start).ok()?;
                let len = usize::try_from(entry.compressed_size()).ok()?;
                bytes.get(start..start.checked_add(len)?)
            })
            .ok_or_else(|| {
                format!(
                    "the CSV entry's data ({} compressed bytes) lies outside the {}-byte zip",
                    entry.compressed_size(),
                    bytes.len()
                )
            })?;
        Ok(Entry {
            data,
            deflated,
            size: entry.size(),
            crc: entry.crc32(),
        })
    }

    /// The whole CSV text, size and CRC-32 checked: a stored entry as it lies in the zip, a
    /// deflated one up to `whole_max` bytes inflated at once into a buffer of exactly its declared
    /// size (libdeflate). `None`: too large, stream it with [`EntryReader`].
    pub(super) fn whole(&self, whole_max: u64) -> Result<Option<Cow<'z, [u8]>>, String> {
        if !self.deflated {
            self.check(self.data.len() as u64, crc32fast::hash(self.data))?;
            return Ok(Some(Cow::Borrowed(self.data)));
        }
        if self.size > whole_max {
            return Ok(None);
        }
        let Ok(size) = usize::try_from(self.size) else {
            return Ok(None);
        };
        let mut text = take_buffer(size);
        let n = libdeflater::Decompressor::new()
            .deflate_decompress(self.data, &mut text)
            .map_err(|e| match e {
                libdeflater::DecompressionError::InsufficientSpace => self.past_size(),
                libdeflater::DecompressionError::BadData => {
                    "corrupt deflate data (libdeflate: bad data)".to_owned()
                }
            })?;
        text.truncate(n);
        self.check(n as u64, crc32fast::hash(&text))?;
        Ok(Some(Cow::Owned(text)))
    }

    pub(super) fn past_size(&self) -> String {
        format!(
            "the CSV entry inflates past its declared {} bytes",
            self.size
        )
    }

    /// Checks the CSV's length and CRC-32 against the zip's.
    pub(super) fn check(&self, len: u64, crc: u32) -> Result<(), String> {
        if len != self.size {
            return Err(format!(
                "the CSV entry inflated to {len} bytes, its header says {}",
                self.size
            ));
        }
        if crc != self.crc {
            return Err(format!(
                "CRC-32 mismatch: computed {crc:08x}, the zip says {:08x}",
                self.crc
            ));
        }
        Ok(())
    }
}

/// A deflated entry too large to hold whole, inflated chunk by chunk (flate2) with its size and
/// CRC-32 checked at the end.
pub(super) struct EntryReader<'e, 'z> {
    pub(super) entry: &'e Entry<'z>,
    pub(super) inflate: Decompress,
    pub(super) hasher: crc32fast::Hasher,
    pub(super) out: u64,
    /// The deflate stream reached its end marker.
    pub(super) ended: bool,
    pub(super) done: bool,
}

impl<'e, 'z> EntryReader<'e, 'z> {
    pub(super) fn new(entry: &'e Entry<'z>) -> EntryReader<'e, 'z> {
        EntryReader {
            entry,
            inflate: Decompress::new(false),
            hasher: crc32fast::Hasher::new(),
            out: 0,
            ended: false,
            done: false,
        }
    }

    pub(super) fn fill(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let d = &mut self.inflate;
        let n = if self.ended {
            0
        } else {
            loop {
                let (out_before, in_before) = (d.total_out(), d.total_in());
                let input = usize::try_from(in_before)
                    .ok()
                    .and_then(|i| self.entry.data.get(i..))
                    .unwrap_or_default();
                let status = d
                    .decompress(input, buf, FlushDecompress::None)
                    .map_err(|e| format!("corrupt deflate data: {e}"))?;
                let n = usize::try_from(d.total_out() - out_before).unwrap_or(0);
                if status == Status::StreamEnd {
                    self.ended = true;
                }
                if n > 0 || self.ended || buf.is_empty() {
                    break n;
                }
                if d.total_in() == in_before {
                    return Err(format!(
                        "the deflate stream ends early after {} of {} bytes",
                        self.out, self.entry.size
                    ));
                }
            }
        };
        self.hasher.update(&buf[..n]);
        self.out += n as u64;
        if self.out > self.entry.size {
            return Err(self.entry.past_size());
        }
        if n == 0 {
            self.done = true;
            self.entry.check(self.out, self.hasher.clone().finalize())?;
        }
        Ok(n)
    }
}

impl Read for EntryReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        self.fill(buf).map_err(std::io::Error::other)
    }
}
