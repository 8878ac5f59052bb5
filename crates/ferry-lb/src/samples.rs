//! Per-server-group traffic samples for canary analysis: one bucket per unix second (requests,
//! errors, latency sum and maximum) for the last [`SAMPLE_SECONDS`] seconds, in a ring of atomics.
//!
//! Recording is lock-free: a request adds to the slot of its second with a few atomic operations.
//! A slot is reused for a new second `SAMPLE_SECONDS` later. The writer that first sees the slot
//! holding an older second claims it (marks it [`RESETTING`]), zeroes it and publishes the new
//! second; other writers of that second wait the few stores this takes. Writes for a second older
//! than the one a slot holds are dropped (they are over an hour late). Readers work like a
//! seqlock: they read the slot's second, the counters, then the second again, and keep the bucket
//! only if both reads name the second they want, so a bucket never mixes two seconds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds of history kept per server group.
pub(crate) const SAMPLE_SECONDS: usize = 3600;

/// One second of traffic to one server group, as returned by [`crate::Lb::samples`].
///
/// A request is counted in the second its response ended (when the load balancer answered it
/// itself, the second of that answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleBucket {
    /// The unix second (seconds since 1970-01-01T00:00:00Z).
    pub second: u64,
    /// Responses given after choosing a backend of the group.
    pub requests: u64,
    /// Those with status 500 or above, including the load balancer's own 502 and 504.
    pub errors: u64,
    /// Sum of the requests' latencies, microseconds: from choosing the backend to the end of the
    /// response (as `lb_request_duration_seconds`).
    pub latency_us_sum: u64,
    /// The largest of those latencies, microseconds.
    pub latency_us_max: u64,
}

/// A slot's `second` while a writer resets it for a new second.
const RESETTING: u64 = u64::MAX;

/// One second's counters. `second` is 0 until first used.
#[derive(Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us_sum: AtomicU64,
    latency_us_max: AtomicU64,
}

/// The last [`SAMPLE_SECONDS`] seconds of one server group. The slots are allocated with the
/// first request, so a group that never had traffic costs nothing.
#[derive(Default)]
pub(crate) struct SampleRing {
    slots: OnceLock<Box<[Slot]>>,
}

impl std::fmt::Debug for SampleRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleRing")
            .field("newest", &self.newest_second())
            .finish()
    }
}

/// The current unix second.
pub(crate) fn unix_second_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A latency in whole microseconds.
pub(crate) fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

fn slot_index(second: u64) -> usize {
    // The remainder is below SAMPLE_SECONDS, so it fits.
    usize::try_from(second % SAMPLE_SECONDS as u64).unwrap_or(0)
}

impl SampleRing {
    /// Counts one request that ended in `second` after `latency_us`, an error or not.
    pub fn record(&self, second: u64, error: bool, latency_us: u64) {
        if second == 0 || second == RESETTING {
            return;
        }
        let slots = self
            .slots
            .get_or_init(|| (0..SAMPLE_SECONDS).map(|_| Slot::default()).collect());
        let Some(slot) = slots.get(slot_index(second)) else {
            return;
        };
        if !slot.claim(second) {
            return;
        }
        // `requests` first, the rest released after it: a reader that sees an error or a latency
        // also sees its request, so `errors <= requests` always holds in a bucket read.
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Release);
        }
        slot.latency_us_sum.fetch_add(latency_us, Ordering::Release);
        slot.latency_us_max.fetch_max(latency_us, Ordering::Release);
    }

    /// The buckets with at least one request for `from <= second < to`, sorted by second.
    pub fn read(&self, from: u64, to: u64) -> Vec<SampleBucket> {
        let Some(slots) = self.slots.get() else {
            return Vec::new();
        };
        let mut buckets: Vec<SampleBucket> = slots
            .iter()
            .filter_map(|slot| slot.read(from, to))
            .collect();
        buckets.sort_unstable_by_key(|b| b.second);
        buckets
    }

    /// The newest second recorded, if any (a slot being reset counts as nothing).
    pub fn newest_second(&self) -> Option<u64> {
        self.slots
            .get()?
            .iter()
            .map(|slot| slot.second.load(Ordering::Relaxed))
            .filter(|second| *second != RESETTING && *second != 0)
            .max()
    }
}

impl Slot {
    /// Makes the slot hold `second`, resetting it if it held an older one. False if it holds a
    /// newer second (the sample is too late to keep).
    fn claim(&self, second: u64) -> bool {
        let mut spins = 0u32;
        loop {
            let held = self.second.load(Ordering::Acquire);
            if held == second {
                return true;
            }
            if held == RESETTING {
                // Another writer is zeroing the slot: a handful of stores.
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if held > second {
                return false;
            }
            if self
                .second
                .compare_exchange(held, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // The zeroes must not become visible before RESETTING does (see `read`).
                fence(Ordering::Release);
                self.requests.store(0, Ordering::Relaxed);
                self.errors.store(0, Ordering::Relaxed);
                self.latency_us_sum.store(0, Ordering::Relaxed);
                self.latency_us_max.store(0, Ordering::Relaxed);
                self.second.store(second, Ordering::Release);
                return true;
            }
        }
    }

    /// The slot's bucket if it holds a second in `from..to` with requests, read consistently.
    fn read(&self, from: u64, to: u64) -> Option<SampleBucket> {
        let second = self.second.load(Ordering::Acquire);
        if second == RESETTING || second < from || second >= to {
            return None;
        }
        let errors = self.errors.load(Ordering::Acquire);
        let latency_us_sum = self.latency_us_sum.load(Ordering::Acquire);
        let latency_us_max = self.latency_us_max.load(Ordering::Acquire);
        let requests = self.requests.load(Ordering::Relaxed);
        // Seqlock check: had a writer reset the slot meanwhile, `second` would have changed.
        fence(Ordering::Acquire);
        if self.second.load(Ordering::Relaxed) != second || requests == 0 {
            return None;
        }
        Some(SampleBucket {
            second,
            requests,
            errors,
            latency_us_sum,
            latency_us_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn buckets_add_up_per_second_and_only_seconds_with_requests_are_returned() {
        let ring = SampleRing::default();
        assert_eq!(ring.read(0, u64::MAX), vec![]);
        ring.record(T0, false, 100);
        ring.record(T0, true, 300);
        ring.record(T0 + 2, false, 50);
        assert_eq!(
            ring.read(T0, T0 + 3),
            vec![
                SampleBucket {
                    second: T0,
                    requests: 2,
                    errors: 1,
                    latency_us_sum: 400,
                    latency_us_max: 300,
                },
                SampleBucket {
                    second: T0 + 2,
                    requests: 1,
                    errors: 0,
                    latency_us_sum: 50,
                    latency_us_max: 50,
                },
            ]
        );
        // `from` is inclusive, `to` exclusive.
        assert_eq!(ring.read(T0 + 1, T0 + 2), vec![]);
        assert_eq!(ring.read(T0 + 2, T0 + 3).len(), 1);
        assert_eq!(ring.read(T0, T0 + 2).len(), 1);
        assert_eq!(ring.newest_second(), Some(T0 + 2));
    }

    #[test]
    fn a_slot_reused_an_hour_later_starts_from_zero_and_late_samples_are_dropped() {
        let ring = SampleRing::default();
        let later = T0 + SAMPLE_SECONDS as u64;
        ring.record(T0, true, 1_000);
        ring.record(T0, true, 2_000);
        ring.record(later, false, 7);
        assert_eq!(
            ring.read(0, u64::MAX),
            vec![SampleBucket {
                second: later,
                requests: 1,
                errors: 0,
                latency_us_sum: 7,
                latency_us_max: 7,
            }]
        );
        // The old second's slot now belongs to the newer one: a late write is dropped.
        ring.record(T0, true, 5);
        assert_eq!(ring.read(0, u64::MAX)[0].requests, 1);
        assert_eq!(ring.read(T0, T0 + 1), vec![]);
    }

    #[test]
    fn the_ring_wraps_around_keeping_the_last_hour() {
        let ring = SampleRing::default();
        let seconds = SAMPLE_SECONDS as u64 + 100;
        for s in 0..seconds {
            ring.record(T0 + s, s % 2 == 0, s);
        }
        let buckets = ring.read(0, u64::MAX);
        assert_eq!(buckets.len(), SAMPLE_SECONDS);
        assert_eq!(buckets[0].second, T0 + 100);
        assert_eq!(buckets[SAMPLE_SECONDS - 1].second, T0 + seconds - 1);
        assert!(buckets.windows(2).all(|w| w[1].second == w[0].second + 1));
        assert!(
            buckets
                .iter()
                .all(|b| b.requests == 1 && b.latency_us_sum == b.second - T0)
        );
    }

    #[test]
    fn concurrent_writers_sum_exactly() {
        let ring = Arc::new(SampleRing::default());
        let (threads, per_thread) = (8u64, 20_000u64);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        // Five seconds, so threads keep meeting on fresh slots.
                        ring.record(T0 + i * 5 / per_thread, i % 4 == 0, t + 1);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let buckets = ring.read(T0, T0 + 5);
        assert_eq!(buckets.len(), 5);
        let total = |f: fn(&SampleBucket) -> u64| buckets.iter().map(f).sum::<u64>();
        assert_eq!(total(|b| b.requests), threads * per_thread);
        assert_eq!(total(|b| b.errors), threads * per_thread / 4);
        assert_eq!(
            total(|b| b.latency_us_sum),
            per_thread * (1..=threads).sum::<u64>()
        );
        assert!(buckets.iter().all(|b| b.latency_us_max == threads));
    }

    #[test]
    fn concurrent_writers_of_a_new_second_reset_the_slot_once() {
        let ring = Arc::new(SampleRing::default());
        for _ in 0..1000 {
            ring.record(T0, true, 1_000_000);
        }
        let next = T0 + SAMPLE_SECONDS as u64;
        let (threads, per_thread) = (8u64, 10_000u64);
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        ring.record(next, false, 2);
                    }
                })
            })
            .collect();
        // A reader racing the writers never sees the old second mixed into the new one.
        for _ in 0..1000 {
            for bucket in ring.read(0, u64::MAX) {
                if bucket.second == next {
                    assert_eq!(bucket.errors, 0, "{bucket:?}");
                    assert!(bucket.latency_us_max <= 2, "{bucket:?}");
                } else {
                    assert_eq!(bucket.second, T0);
                    assert!(bucket.requests <= 1000, "{bucket:?}");
                    assert_eq!(bucket.latency_us_max, 1_000_000, "{bucket:?}");
                }
            }
        }
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(
            ring.read(0, u64::MAX),
            vec![SampleBucket {
                second: next,
                requests: threads * per_thread,
                errors: 0,
                latency_us_sum: 2 * threads * per_thread,
                latency_us_max: 2,
            }]
        );
    }
}
