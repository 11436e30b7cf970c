//! The one place that decides whether `sync` means `std::sync` or loom's model of it, so the
//! producer's concurrent structures are written once and checked by loom under `--cfg loom`
//! (`RUSTFLAGS="--cfg loom" cargo test -p surety-core --release loom`).

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, atomic};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, atomic};
