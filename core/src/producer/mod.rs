//! The producer's core, without I/O: the memory budget its batches are built in
//! ([`BufferPool`]), and (to come) the accumulator that groups records into batches and the
//! sender logic that decides what goes on the wire.

mod buffer_pool;

pub use buffer_pool::{AllocateError, BufferPool};
