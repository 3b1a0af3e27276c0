//! Out-of-order acknowledgement tracking.
//!
//! The sink acknowledges record ids in any order. What matters for
//! persistence is the *watermark*: the smallest id not yet acknowledged, i.e.
//! the end of the longest acknowledged prefix. Acks above the watermark are
//! kept in a bitmap (one bit per id, in 64-bit words) that is trimmed from the
//! front as the watermark advances, so memory is proportional to the spread of
//! in-flight ids, not to the total number of records.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub(crate) struct AckSet {
    /// Every id `< watermark` is acknowledged (or no longer exists).
    watermark: u64,
    /// Id of bit 0 of `words[0]`; a multiple of 64, `<= watermark`.
    base: u64,
    words: VecDeque<u64>,
}

impl AckSet {
    pub(crate) fn new(watermark: u64) -> Self {
        AckSet {
            watermark,
            base: watermark & !63,
            words: VecDeque::new(),
        }
    }

    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    pub(crate) fn is_acked(&self, id: u64) -> bool {
        if id < self.watermark {
            return true;
        }
        let off = id - self.base;
        let Ok(idx) = usize::try_from(off / 64) else {
            return false;
        };
        self.words
            .get(idx)
            .is_some_and(|w| w & (1u64 << (off % 64)) != 0)
    }

    /// Marks `id` acknowledged; returns true if it was not already.
    pub(crate) fn ack(&mut self, id: u64) -> bool {
        if self.is_acked(id) {
            return false;
        }
        let off = id - self.base;
        let Ok(idx) = usize::try_from(off / 64) else {
            return false;
        };
        if idx >= self.words.len() {
            self.words.resize(idx + 1, 0);
        }
        self.words[idx] |= 1u64 << (off % 64);
        if id == self.watermark {
            self.absorb();
        }
        true
    }

    /// Moves the watermark forward to at least `target` (records that were
    /// dropped or never existed), then absorbs any acks that follow.
    pub(crate) fn advance_to(&mut self, target: u64) {
        if target <= self.watermark {
            return;
        }
        self.watermark = target;
        self.trim();
        self.absorb();
    }

    /// Number of acknowledged ids in `[from, to)`.
    pub(crate) fn count_acked_in(&self, from: u64, to: u64) -> u64 {
        (from..to).filter(|&id| self.is_acked(id)).count() as u64
    }

    /// Number of acknowledged ids at or above the watermark.
    pub(crate) fn acked_above_watermark(&self) -> u64 {
        let total: u64 = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        let below = match self.words.front() {
            Some(first) => {
                let n = self.watermark - self.base; // < 64 after trim()
                if n >= 64 {
                    u64::from(first.count_ones())
                } else {
                    u64::from((first & ((1u64 << n) - 1)).count_ones())
                }
            }
            None => 0,
        };
        total - below
    }

    fn absorb(&mut self) {
        loop {
            let off = self.watermark - self.base;
            let Ok(idx) = usize::try_from(off / 64) else {
                break;
            };
            let Some(&word) = self.words.get(idx) else {
                break;
            };
            let bit = off % 64;
            let ones = u64::from((!(word >> bit)).trailing_zeros()).min(64 - bit);
            if ones == 0 {
                break;
            }
            self.watermark += ones;
            if bit + ones < 64 {
                break;
            }
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.base + 64 <= self.watermark && !self.words.is_empty() {
            self.words.pop_front();
            self.base += 64;
        }
        if self.words.is_empty() {
            self.base = self.watermark & !63;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_out_of_order() {
        let mut a = AckSet::new(1);
        assert!(a.ack(2));
        assert_eq!(a.watermark(), 1);
        assert!(a.ack(1));
        assert_eq!(a.watermark(), 3);
        assert!(!a.ack(2));
        for id in (3..500).rev() {
            a.ack(id);
        }
        assert_eq!(a.watermark(), 500);
        assert_eq!(a.acked_above_watermark(), 0);
        a.ack(600);
        a.ack(601);
        assert_eq!(a.acked_above_watermark(), 2);
        assert_eq!(a.count_acked_in(590, 700), 2);
        a.advance_to(600);
        assert_eq!(a.watermark(), 602);
        assert!(a.is_acked(10));
        assert!(!a.is_acked(602));
    }

    #[test]
    fn matches_naive_model() {
        // Deterministic pseudo-random permutation of 0..5000 acked in order.
        let n = 5000u64;
        let mut ids: Vec<u64> = (0..n).collect();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in (1..ids.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = (x % (i as u64 + 1)) as usize;
            ids.swap(i, j);
        }
        let mut a = AckSet::new(0);
        let mut seen = vec![false; n as usize];
        for id in ids {
            a.ack(id);
            seen[id as usize] = true;
            let w = seen.iter().position(|s| !s).unwrap_or(n as usize) as u64;
            assert_eq!(a.watermark(), w);
            let above = seen[w as usize..].iter().filter(|s| **s).count() as u64;
            assert_eq!(a.acked_above_watermark(), above);
        }
    }
}
