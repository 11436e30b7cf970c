//! How a consumer's fetch is planned and when it is answered: Kafka's `ReplicaManager` read rules
//! and its `DelayedFetch` completion rule, as pure functions the broker applies.
//!
//! - **How much each partition may read.** Partitions are read in request order. Each gets at
//!   most its `partition_max_bytes` and at most what is left of the request's `max_bytes`. The
//!   first partition that returns data may exceed both by one batch (KIP-74), so a consumer
//!   whose limits are smaller than a batch still makes progress; after it, a partition whose
//!   first batch does not fit returns nothing.
//! - **How far a consumer may read.** Up to the high watermark with `read_uncommitted`, up to the
//!   last stable offset with `read_committed`: records above it are not committed (or, for
//!   transactions, not decided) and a consumer must not see what a new leader could lose.
//! - **When to answer.** At once if any partition has an error, or if the bytes read reach
//!   `min_bytes`; otherwise the fetch waits for an append that could satisfy it, up to
//!   `max_wait_ms` (capped, so a confused client cannot park a request for hours).
//!
//! Keeping these here, not in the broker, means the broker moves bytes and time and decides
//! nothing, and a cluster's followers serving consumers (KIP-392) would apply the same rules.

/// `isolation_level` in a Fetch request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsolationLevel {
    /// 0: every record below the high watermark.
    ReadUncommitted,
    /// 1: only records below the last stable offset.
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value; anything but 1 reads uncommitted, as Kafka's broker treats it.
    pub fn from_wire(level: i8) -> Self {
        if level == 1 {
            IsolationLevel::ReadCommitted
        } else {
            IsolationLevel::ReadUncommitted
        }
    }

    /// The first offset a consumer at this level may not read.
    pub fn upper_bound(self, high_watermark: i64, last_stable_offset: i64) -> i64 {
        match self {
            IsolationLevel::ReadUncommitted => high_watermark,
            IsolationLevel::ReadCommitted => last_stable_offset.min(high_watermark),
        }
    }
}

/// The longest a fetch waits, whatever the client asks. Kafka has no cap; 30 s is longer than
/// any client's default `fetch.max.wait.ms` (500 ms) by far, and short enough that a request
/// asking for hours does not pin its connection.
pub const MAX_WAIT_CAP_MS: u64 = 30_000;

/// A fetch request's limits, as the client sent them (see [`FetchParams::capped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchParams {
    /// `max_bytes`: the whole response (but see KIP-74).
    pub max_bytes: i32,
    /// `min_bytes`: answer early once this much is read.
    pub min_bytes: i32,
    /// `max_wait_ms`: answer by then even with less.
    pub max_wait_ms: i32,
    /// Which records are visible.
    pub isolation: IsolationLevel,
}

impl FetchParams {
    /// The same request with `max_bytes` cut to the broker's `fetch.max.bytes` (KIP-541): what a
    /// response may hold is the broker's to bound, not the client's to choose.
    pub fn capped(mut self, broker_fetch_max_bytes: i32) -> Self {
        self.max_bytes = self.max_bytes.min(broker_fetch_max_bytes);
        self
    }

    /// How long the fetch may wait for `min_bytes`, in milliseconds.
    pub fn max_wait_ms(&self) -> u64 {
        u64::try_from(self.max_wait_ms)
            .unwrap_or(0)
            .min(MAX_WAIT_CAP_MS)
    }

    /// Whether a fetch that read `bytes` (and saw an error in some partition if `any_error`)
    /// is answered now, or waits for an append.
    pub fn respond_now(&self, bytes: usize, any_error: bool) -> bool {
        any_error || bytes >= usize::try_from(self.min_bytes).unwrap_or(0)
    }
}

/// What one partition's read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// The most bytes of whole batches to return.
    pub max_bytes: usize,
    /// Whether a first batch larger than `max_bytes` is returned whole (KIP-74).
    pub min_one_batch: bool,
}

/// The response's byte budget as partitions are read in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchBudget {
    remaining: usize,
    taken: usize,
}

impl FetchBudget {
    /// A budget of the request's `max_bytes`.
    pub fn new(params: &FetchParams) -> Self {
        FetchBudget {
            remaining: usize::try_from(params.max_bytes).unwrap_or(0),
            taken: 0,
        }
    }

    /// Bytes of records taken so far.
    pub fn taken(&self) -> usize {
        self.taken
    }

    /// The limit for the next partition, whose own limit is `partition_max_bytes`; `None` when
    /// it may read nothing at all (the budget is spent and the response already has data).
    pub fn limit(&self, partition_max_bytes: i32) -> Option<ReadLimit> {
        let own = usize::try_from(partition_max_bytes).unwrap_or(0);
        let max_bytes = own.min(self.remaining);
        let min_one_batch = self.taken == 0;
        (max_bytes > 0 || min_one_batch).then_some(ReadLimit {
            max_bytes,
            min_one_batch,
        })
    }

    /// Whether `read` bytes, read under `limit`, go into the response; if so they are taken
    /// from the budget. A read past its limit is only allowed for the KIP-74 first batch.
    pub fn take(&mut self, limit: ReadLimit, read: usize) -> bool {
        if read > limit.max_bytes && !limit.min_one_batch {
            return false;
        }
        self.taken += read;
        self.remaining = self.remaining.saturating_sub(read);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(max_bytes: i32, min_bytes: i32, max_wait_ms: i32) -> FetchParams {
        FetchParams {
            max_bytes,
            min_bytes,
            max_wait_ms,
            isolation: IsolationLevel::ReadUncommitted,
        }
    }

    #[test]
    fn partitions_share_max_bytes_in_order_and_the_first_with_data_may_exceed_it() {
        let p = params(100, 1, 500);
        let mut budget = FetchBudget::new(&p);
        // The first partition may return one batch larger than every limit (KIP-74).
        let first = budget.limit(50).unwrap();
        assert_eq!(
            first,
            ReadLimit {
                max_bytes: 50,
                min_one_batch: true
            }
        );
        assert!(budget.take(first, 120));
        // The budget is spent: the next partition reads nothing.
        assert_eq!(budget.limit(50), None);
        assert_eq!(budget.taken(), 120);

        let mut budget = FetchBudget::new(&p);
        let a = budget.limit(60).unwrap();
        assert!(budget.take(a, 60));
        let b = budget.limit(60).unwrap();
        assert_eq!(
            b,
            ReadLimit {
                max_bytes: 40,
                min_one_batch: false
            }
        );
        // A later partition's oversized first batch is left out, not truncated.
        assert!(!budget.take(b, 45));
        assert!(budget.take(b, 30));
        assert_eq!(budget.taken(), 90);
    }

    #[test]
    fn an_empty_partition_leaves_the_first_batch_rule_to_the_next() {
        let p = params(10, 1, 0);
        let mut budget = FetchBudget::new(&p);
        let empty = budget.limit(10).unwrap();
        assert!(budget.take(empty, 0));
        let next = budget.limit(10).unwrap();
        assert!(next.min_one_batch, "nothing was taken yet");
        assert!(budget.take(next, 500));
    }

    #[test]
    fn zero_or_negative_limits_still_let_the_first_batch_through() {
        let p = params(0, 1, 0);
        let mut budget = FetchBudget::new(&p);
        let first = budget.limit(-5).unwrap();
        assert_eq!(first.max_bytes, 0);
        assert!(budget.take(first, 64));
        assert_eq!(budget.limit(1000), None);
    }

    #[test]
    fn the_broker_caps_what_a_client_asks() {
        let asked = params(i32::MAX, 1, 0).capped(55 << 20);
        assert_eq!(asked.max_bytes, 55 << 20);
        assert_eq!(params(1000, 1, 0).capped(55 << 20).max_bytes, 1000);
        let budget = FetchBudget::new(&asked);
        let first = budget.limit(i32::MAX).unwrap();
        assert_eq!(first.max_bytes, 55 << 20);
    }

    #[test]
    fn a_fetch_waits_for_min_bytes_unless_a_partition_failed() {
        let p = params(1000, 100, 500);
        assert!(!p.respond_now(99, false));
        assert!(p.respond_now(100, false));
        assert!(p.respond_now(0, true));
        assert!(params(1000, 0, 500).respond_now(0, false));
        assert!(params(1000, -3, 500).respond_now(0, false));
    }

    #[test]
    fn the_wait_is_capped_and_never_negative() {
        assert_eq!(params(1, 1, 500).max_wait_ms(), 500);
        assert_eq!(params(1, 1, -1).max_wait_ms(), 0);
        assert_eq!(params(1, 1, i32::MAX).max_wait_ms(), MAX_WAIT_CAP_MS);
    }

    #[test]
    fn read_committed_stops_at_the_last_stable_offset() {
        assert_eq!(IsolationLevel::from_wire(0).upper_bound(10, 7), 10);
        assert_eq!(IsolationLevel::from_wire(1).upper_bound(10, 7), 7);
        assert_eq!(IsolationLevel::from_wire(1).upper_bound(10, 12), 10);
        assert_eq!(
            IsolationLevel::from_wire(5),
            IsolationLevel::ReadUncommitted
        );
    }
}
