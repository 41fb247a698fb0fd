//! A cap on the memory that image decoding may take at once: each image being decoded holds
//! its header's pixel count from the budget until it is decoded and resized. An image that does
//! not fit is refused at once (503 with `Retry-After`) rather than queued, so that a burst of
//! huge images cannot take the server's memory, while ordinary photos never come near the cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct DecodeBudget {
    capacity: u64,
    in_use: Mutex<u64>,
    refused: AtomicU64,
}

/// Pixels held from the budget; given back when dropped.
#[derive(Debug)]
pub struct DecodePermit {
    budget: Arc<DecodeBudget>,
    pixels: u64,
}

impl DecodeBudget {
    pub fn new(capacity: u64) -> Self {
        DecodeBudget { capacity, in_use: Mutex::new(0), refused: AtomicU64::new(0) }
    }

    /// Holds `pixels` from the budget, or `None` when they do not fit now.
    pub fn try_acquire(self: &Arc<Self>, pixels: u64) -> Option<DecodePermit> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if in_use.saturating_add(pixels) > self.capacity {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *in_use += pixels;
        Some(DecodePermit { budget: self.clone(), pixels })
    }

    /// Pixels being decoded now.
    pub fn in_use(&self) -> u64 {
        *self.in_use.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Images refused so far because the budget was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for DecodePermit {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *in_use = in_use.saturating_sub(self.pixels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_held_until_the_permit_is_dropped() {
        let budget = Arc::new(DecodeBudget::new(100));
        let a = budget.try_acquire(60).unwrap();
        assert!(budget.try_acquire(50).is_none());
        let b = budget.try_acquire(40).unwrap();
        assert_eq!((budget.in_use(), budget.refused()), (100, 1));
        drop(a);
        assert!(budget.try_acquire(60).is_some());
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
