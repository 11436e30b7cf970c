//! Positional file writes, with a seam unit tests use to make the disk "fill up" mid-write.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Writes all of `buf` at `pos`. Under `cfg(test)` a per-thread write budget can cut the write
/// short and fail it with `ENOSPC`, exactly as a full disk does, so the rollback path is tested.
pub(crate) fn write_all_at(file: &File, buf: &[u8], pos: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some(allowed) = fault::spend(buf.len()) {
        file.write_all_at(&buf[..allowed], pos)?;
        return Err(io::Error::from_raw_os_error(28)); // ENOSPC
    }
    file.write_all_at(buf, pos)
}

#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;

    thread_local! {
        static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// From now on this thread may write `bytes` more bytes; the write that crosses the budget
    /// writes what fits and fails with ENOSPC, as do all after it.
    pub(crate) fn fail_writes_after(bytes: usize) {
        BUDGET.with(|b| b.set(Some(bytes)));
    }

    /// Lifts the budget.
    pub(crate) fn clear() {
        BUDGET.with(|b| b.set(None));
    }

    /// `Some(n)`: only `n` bytes of this write may go through, then it fails.
    pub(super) fn spend(len: usize) -> Option<usize> {
        BUDGET.with(|b| {
            let budget = b.get()?;
            if len <= budget {
                b.set(Some(budget - len));
                None
            } else {
                b.set(Some(0));
                Some(budget)
            }
        })
    }
}
