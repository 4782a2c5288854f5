//! Produce rules: valid `acks`, the per-partition checks before an append, and the
//! idempotent-producer sequence check ([`SequenceCheck`]) the partition owner applies.

use kafka_protocol::ResponseError;

use crate::batch::{self, BatchHeader};

/// `acks` values Kafka accepts: 0 (no response), 1 (leader), -1 (all replicas).
pub fn valid_acks(acks: i16) -> bool {
    (-1..=1).contains(&acks)
}

/// Validates one partition's records against the topic's `max.message.bytes`: every batch
/// must be well formed (CORRUPT_MESSAGE / INVALID_RECORD) and none larger than the limit
/// (MESSAGE_TOO_LARGE). Returns the batch headers.
pub fn check_records(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<BatchHeader>, ResponseError> {
    let headers = batch::validate(records).map_err(|e| e.code())?;
    if headers.iter().any(|h| h.size > max_message_bytes) {
        return Err(ResponseError::MessageTooLarge);
    }
    if headers
        .iter()
        .any(|h| h.is_transactional() && h.producer_id < 0)
    {
        return Err(ResponseError::InvalidRecord);
    }
    Ok(headers)
}

/// What the sequence check decided for one batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended at this base offset: answer success, append nothing.
    Duplicate { base_offset: i64 },
    /// Reject with this error.
    Reject(ResponseError),
}

/// One of the last batches a producer appended to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMark {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Batches remembered per producer and partition (Kafka keeps 5, its max in-flight).
pub const REMEMBERED_BATCHES: usize = 5;

/// A producer's state on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The max timestamp of its last appended batch (DescribeProducers).
    pub last_timestamp: i64,
    /// Oldest first.
    pub batches: std::collections::VecDeque<BatchMark>,
}

impl ProducerEntry {
    /// Kafka's rules: a newer epoch must start at sequence 0; an older epoch is fenced
    /// (INVALID_PRODUCER_EPOCH); a batch equal to a remembered one is a duplicate; the
    /// next batch must start right after the last sequence (else
    /// OUT_OF_ORDER_SEQUENCE_NUMBER).
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if self.batches.is_empty() && self.epoch == 0 && h.producer_epoch >= 0 {
            // Unknown producer (or one whose state was removed with its data): Kafka
            // accepts any sequence for a producer it has no state for.
            return SequenceCheck::Append;
        }
        if h.producer_epoch < self.epoch {
            return SequenceCheck::Reject(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > self.epoch {
            return if h.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        if let Some(m) = self
            .batches
            .iter()
            .find(|m| m.first_seq == h.base_sequence && m.last_seq == h.last_sequence())
        {
            return SequenceCheck::Duplicate {
                base_offset: m.base_offset,
            };
        }
        let Some(last) = self.batches.back() else {
            return SequenceCheck::Append;
        };
        let expected = if last.last_seq == i32::MAX {
            0
        } else {
            last.last_seq + 1
        };
        if h.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        }
    }

    /// A transaction marker of `epoch` was written: a newer epoch fences the older one
    /// (its batches get INVALID_PRODUCER_EPOCH from now on).
    pub fn fence(&mut self, epoch: i16) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    /// Records an appended batch (its base offset already assigned).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_epoch != self.epoch {
            self.batches.clear();
            self.epoch = h.producer_epoch;
        }
        self.last_timestamp = h.max_timestamp;
        if self.batches.len() == REMEMBERED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMark {
            first_seq: h.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(epoch: i16, seq: i32, n: i32, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            size: 100,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: 7,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn acks() {
        assert!(valid_acks(0) && valid_acks(1) && valid_acks(-1));
        assert!(!valid_acks(2) && !valid_acks(-2));
    }

    #[test]
    fn sequences() {
        let mut p = ProducerEntry::default();
        assert_eq!(p.check(&h(0, 0, 3, 0)), SequenceCheck::Append);
        p.record(&h(0, 0, 3, 0));
        assert_eq!(p.check(&h(0, 3, 2, 0)), SequenceCheck::Append);
        p.record(&h(0, 3, 2, 3));
        // The same batch again: a duplicate answered with its original offset.
        assert_eq!(
            p.check(&h(0, 0, 3, 99)),
            SequenceCheck::Duplicate { base_offset: 0 }
        );
        assert_eq!(
            p.check(&h(0, 3, 2, 99)),
            SequenceCheck::Duplicate { base_offset: 3 }
        );
        // A gap.
        assert_eq!(
            p.check(&h(0, 7, 1, 99)),
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        // A stale epoch is fenced; a new epoch must restart at 0.
        p.record(&h(1, 0, 1, 5));
        assert_eq!(
            p.check(&h(0, 5, 1, 9)),
            SequenceCheck::Reject(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            p.check(&h(2, 4, 1, 9)),
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(&h(2, 0, 1, 9)), SequenceCheck::Append);
        // Only the last five batches are remembered.
        let mut q = ProducerEntry::default();
        for i in 0..7 {
            q.record(&h(0, i, 1, i64::from(i)));
        }
        assert_eq!(q.batches.len(), REMEMBERED_BATCHES);
        assert_eq!(
            q.check(&h(0, 6, 1, 0)),
            SequenceCheck::Duplicate { base_offset: 6 }
        );
    }
}
