//! The producer's core, without I/O: the memory budget its batches are built in
//! ([`BufferPool`]) and the accumulator that groups records into per-partition batches
//! ([`RecordAccumulator`]). The sender logic that decides what goes on the wire is to come.

mod accumulator;
mod buffer_pool;
#[cfg(test)]
mod tests;

pub use accumulator::{
    AccumulatorConfig, AppendOutcome, DeliveryError, ProducerBatch, ReadyCheck, RecordAccumulator,
    RecordFuture, RecordMetadata, TopicPartition,
};
pub use buffer_pool::{AllocateError, BufferPool};
