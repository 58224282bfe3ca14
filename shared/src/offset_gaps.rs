//! Offset gaps: a consumer's defence against a broker that serves a later record batch before an
//! earlier one is readable.
//!
//! Kafka offsets of a plain topic are contiguous, and a consumer that sees offset 109 479 right
//! after 108 938 has skipped 540 messages. The local broker (tansu on S3) served exactly that
//! to both strata-speed and the archiver in a chaos run, and both moved past the batch for good —
//! although the broker had acknowledged it and still holds it (most likely a fetch that listed
//! the partition's objects before the earlier of two concurrent writes was visible). So on a gap the consumer goes back once to the first missing offset: if the
//! broker now serves it, nothing is lost; if the same later offset comes again, the gap is real
//! (a transaction marker, a compacted topic) and is accepted. Messages are admitted through
//! [`GapGuard::admit`]; nothing past a gap is handled before the re-read.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Admit,
    /// Do not handle it; read the partition again from this offset.
    ReadAgainFrom(i64),
}

/// The next expected offset of each partition, and the gaps already read again once.
#[derive(Debug, Default)]
pub struct GapGuard {
    next: HashMap<i32, i64>,
    rechecked: HashMap<i32, i64>,
    /// Gaps found (each read again once).
    pub found: u64,
}

impl GapGuard {
    /// The partition's consumption starts at `offset` (an assignment with a known position).
    pub fn expect(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset);
        self.rechecked.remove(&partition);
    }

    /// The partition's position is unknown (revoked, or assigned at the committed offset).
    pub fn forget(&mut self, partition: i32) {
        self.next.remove(&partition);
        self.rechecked.remove(&partition);
    }

    /// Judges the message at `offset` of `partition`.
    pub fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        if let Some(&expected) = self.next.get(&partition) {
            if offset > expected && self.rechecked.get(&partition) != Some(&expected) {
                self.rechecked.insert(partition, expected);
                self.found += 1;
                return Verdict::ReadAgainFrom(expected);
            }
        }
        self.rechecked.remove(&partition);
        self.next.insert(partition, offset + 1);
        Verdict::Admit
    }

    /// [`GapGuard::check`] for a consumed message; on a gap seeks the partition back and
    /// returns `false` (the message must not be handled: it will come again).
    pub fn admit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        m: &BorrowedMessage<'_>,
    ) -> bool {
        let (partition, offset) = (m.partition(), m.offset());
        match self.check(partition, offset) {
            Verdict::Admit => true,
            Verdict::ReadAgainFrom(from) => {
                tracing::warn!(
                    partition,
                    missing_from = from,
                    next_served = offset,
                    "offset gap: reading the partition again from the first missing offset"
                );
                if let Err(e) = consumer.seek(
                    m.topic(),
                    partition,
                    rdkafka::Offset::Offset(from),
                    Duration::from_secs(5),
                ) {
                    // Cannot go back: accept the gap rather than stall the partition.
                    tracing::error!(partition, error = %e, "could not seek back over an offset gap");
                    self.next.insert(partition, offset + 1);
                    return true;
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_offsets_pass() {
        let mut g = GapGuard::default();
        g.expect(0, 10);
        for o in 10..20 {
            assert_eq!(g.check(0, o), Verdict::Admit);
        }
        assert_eq!(g.found, 0);
    }

    #[test]
    fn a_gap_is_read_again_once_and_filled() {
        let mut g = GapGuard::default();
        g.expect(7, 108_930);
        for o in 108_930..108_939 {
            assert_eq!(g.check(7, o), Verdict::Admit);
        }
        // The broker serves a later batch first.
        assert_eq!(g.check(7, 109_479), Verdict::ReadAgainFrom(108_939));
        // After the seek the missing batch comes, then the later one again.
        for o in 108_939..=109_479 {
            assert_eq!(g.check(7, o), Verdict::Admit, "{o}");
        }
        assert_eq!(g.found, 1);
    }

    #[test]
    fn a_real_gap_is_accepted_after_one_look() {
        let mut g = GapGuard::default();
        g.expect(1, 0);
        assert_eq!(g.check(1, 0), Verdict::Admit);
        // A transaction marker at offset 1: the broker serves 2 again.
        assert_eq!(g.check(1, 2), Verdict::ReadAgainFrom(1));
        assert_eq!(g.check(1, 2), Verdict::Admit);
        assert_eq!(g.check(1, 3), Verdict::Admit);
        // A later gap is looked at again.
        assert_eq!(g.check(1, 9), Verdict::ReadAgainFrom(4));
        assert_eq!(g.found, 2);
    }

    #[test]
    fn unknown_positions_and_other_partitions_are_not_judged() {
        let mut g = GapGuard::default();
        assert_eq!(g.check(3, 500), Verdict::Admit, "no expectation yet");
        assert_eq!(g.check(4, 9), Verdict::Admit);
        assert_eq!(g.check(3, 501), Verdict::Admit);
        g.forget(3);
        assert_eq!(g.check(3, 900), Verdict::Admit, "forgotten on revoke");
        assert_eq!(g.found, 0);
    }
}
