//! Splitting the inflated CSV into lines, bounded in length, checking for cancellation.

use super::*;

/// Check the cancel flag after this many lines.
pub(super) const CANCEL_EVERY: usize = 16 * 1024;

pub(super) enum LineError {
    Io(std::io::Error),
    Cancelled,
    /// A line (1-based number) longer than [`MAX_LINE_BYTES`].
    TooLong {
        line: usize,
    },
    Row(VisionError),
}

/// Calls `f` for every complete line of `buf` (see [`for_each_line`]); returns the length of the
/// complete lines consumed (the rest is an unfinished line).
#[inline]
pub(super) fn split_lines(
    buf: &[u8],
    line_no: &mut usize,
    f: &mut impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<usize, LineError> {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        emit_line(&buf[start..end], line_no, f)?;
        start = end + 1;
    }
    Ok(start)
}

#[inline]
pub(super) fn emit_line(
    line: &[u8],
    line_no: &mut usize,
    f: &mut impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    *line_no += 1;
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong { line: *line_no });
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Ok(());
    }
    f(*line_no, line).map_err(LineError::Row)
}

/// [`for_each_line`] over a CSV text held whole, checking `cancel` every [`CANCEL_EVERY`] lines.
pub(super) fn for_each_line_in(
    text: &[u8],
    cancel: &AtomicBool,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    let mut line_no = 0usize;
    let mut pos = 0;
    while pos < text.len() {
        // About CANCEL_EVERY lines of kline text per slice, cut after a newline.
        let want = (pos + CANCEL_EVERY * 128).min(text.len());
        let end = match memchr::memchr(b'\n', &text[want..]) {
            Some(i) => want + i + 1,
            None => text.len(),
        };
        let slice = &text[pos..end];
        let done = split_lines(slice, &mut line_no, &mut f)?;
        if done < slice.len() {
            emit_line(&slice[done..], &mut line_no, &mut f)?;
        }
        pos = end;
        if cancel.load(Ordering::Relaxed) {
            return Err(LineError::Cancelled);
        }
    }
    Ok(())
}

/// Calls `f(line_number, line)` for every non-empty line (1-based numbers, `\r` trimmed), reading
/// `r` in chunks.
pub(super) fn for_each_line<R: Read>(
    mut r: R,
    cancel: &AtomicBool,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), VisionError>,
) -> Result<(), LineError> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    let mut line_no = 0usize;
    let mut next_check = CANCEL_EVERY;
    loop {
        if filled == buf.len() {
            // An unfinished line fills the whole buffer: far past any real row.
            return Err(LineError::TooLong { line: line_no + 1 });
        }
        let n = match r.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if n == 0 {
            if filled > 0 {
                emit_line(&buf[..filled], &mut line_no, &mut f)?;
            }
            return Ok(());
        }
        filled += n;
        let start = split_lines(&buf[..filled], &mut line_no, &mut f)?;
        buf.copy_within(start..filled, 0);
        filled -= start;
        if line_no >= next_check {
            next_check = line_no + CANCEL_EVERY;
            if cancel.load(Ordering::Relaxed) {
                return Err(LineError::Cancelled);
            }
        }
    }
}
