//! Merging identical requests in flight: while one request decodes an image with some options,
//! others asking for the same answer wait for it instead of decoding it again. Should the first
//! give up (a timeout, a closed connection), the next waiter takes over the work.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

#[derive(Debug)]
pub struct InFlight<K, V> {
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for InFlight<K, V> {
    fn default() -> Self {
        InFlight { flights: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> InFlight<K, V> {
    /// The answer for `key`: computed by `work` if no one else is computing it now, otherwise
    /// the other's. Returns it and whether this call computed it. Errors are not shared: each
    /// waiter then tries itself.
    pub async fn run<E, F, Fut>(&self, key: &K, work: F) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self.lock().entry(key.clone()).or_default().clone();
        let retire = Retire { flights: self, key, cell };
        let mut computed = false;
        let result = retire
            .cell
            .get_or_try_init(|| {
                computed = true;
                work()
            })
            .await
            .cloned();
        drop(retire);
        result.map(|value| (value, computed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        self.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Retires a flight when its answer is known, or when its last waiter leaves without one (an
/// error, or a request that gave up): later arrivals start a new flight, and usually find the
/// answer in the cache.
struct Retire<'a, K: Hash + Eq, V> {
    flights: &'a InFlight<K, V>,
    key: &'a K,
    cell: Arc<OnceCell<V>>,
}

impl<K: Hash + Eq, V> Drop for Retire<'_, K, V> {
    fn drop(&mut self) {
        let mut flights = self.flights.flights.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = flights.get(self.key).is_some_and(|cell| Arc::ptr_eq(cell, &self.cell));
        // Held by the map and this waiter only: no one else is waiting on it.
        if current && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2) {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn identical_work_in_flight_runs_once() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let flights: Arc<InFlight<&str, u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let results = runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (flights, runs) = (flights.clone(), runs.clone());
                tasks.push(tokio::spawn(async move {
                    flights
                        .run(&"image", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, ()>(42)
                        })
                        .await
                }));
            }
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap().unwrap());
            }
            results
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|(_, computed)| *computed).count(), 1);
        assert!(results.iter().all(|(value, _)| *value == 42));
        assert!(flights.is_empty());
    }
}
