//! The producer's core, without I/O: the memory budget its batches are built in
//! ([`BufferPool`]), the accumulator that groups records into per-partition batches
//! ([`RecordAccumulator`]), and the sender logic that decides what goes on the wire and what a
//! failure means ([`Sender`]), which `check producer` model-checks.

mod accumulator;
mod buffer_pool;
pub mod sender;
#[cfg(test)]
mod tests;

pub use accumulator::{
    AccumulatorConfig, AppendOutcome, DeliveryError, ProducerBatch, ReadyCheck, RecordAccumulator,
    RecordFuture, RecordMetadata, TopicPartition,
};
pub use buffer_pool::{AllocateError, BufferPool};
pub use sender::{
    BatchOutcome, BrokenSender, Completion, OutgoingBatch, SendRequest, Sender, SenderConfig,
};

/// Names a batch between the accumulator, the sender and the driver.
pub type BatchId = u64;
