//! Producer ids for idempotent producers (InitProducerId), unique across restarts.
//!
//! Ids are handed out from blocks; the end of the current block is written (and fsynced) to
//! `producer-id-block` before any id in it is used, so a crash can skip ids but never reuse one,
//! which is what makes a restarted broker's sequence checks safe.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use surety_core::errors::Errors;

use super::Broker;

const BLOCK_SIZE: i64 = 1000;
const FILE: &str = "producer-id-block";

/// Hands out producer ids.
pub struct ProducerIdAllocator {
    path: PathBuf,
    next: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// Continues after the last block any earlier run reserved.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let reserved_end = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Ok(ProducerIdAllocator {
            path,
            next: Mutex::new((reserved_end, reserved_end)),
        })
    }

    /// A producer id no earlier call (in this run or any before) returned.
    pub fn allocate(&self) -> std::io::Result<i64> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (id, end) = *next;
        if id >= end {
            let new_end = id + BLOCK_SIZE;
            let tmp = self.path.with_extension("tmp");
            let mut file = fs::File::create(&tmp)?;
            writeln!(file, "{new_end}")?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            *next = (id, new_end);
        }
        next.0 += 1;
        Ok(id)
    }
}

/// InitProducerId for idempotent producers: a fresh id at epoch 0, as Kafka gives a producer
/// without a transactional id. Transactions are not served yet, so a transactional producer is
/// told `COORDINATOR_NOT_AVAILABLE`, an error every client reports instead of misreading.
pub fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    if let Some(id) = &request.transactional_id {
        // Kafka: an empty transactional id is an invalid request; a real one needs the
        // transaction coordinator, which is not served yet.
        let error = if id.is_empty() {
            Errors::InvalidRequest
        } else {
            Errors::CoordinatorNotAvailable
        };
        return InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    match broker.producer_ids.allocate() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!("allocating a producer id: {e}");
            InitProducerIdResponse::default()
                .with_error_code(Errors::KafkaStorageError.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

/// InitProducerId in a cluster: the id comes from the block the controller gave this broker.
pub async fn init_producer_id_clustered(
    link: &super::cluster::ClusterLink,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |error: Errors| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match &request.transactional_id {
        Some(id) if id.is_empty() => return refused(Errors::InvalidRequest),
        Some(_) => return refused(Errors::CoordinatorNotAvailable),
        None => {}
    }
    match link.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => refused(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        assert!(b.allocate().unwrap() >= BLOCK_SIZE);
    }
}
