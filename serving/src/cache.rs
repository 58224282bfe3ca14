//! A cache bounded in bytes, least recently used out first, that loads each key once at a time.
//!
//! Both caches of the serving layer are one of these: the batch-view blocks
//! (`source::batch`) and the results of step-aligned windows below the time boundary
//! (`results`). A value says what it weighs ([`Weigh`]); when the total passes the budget the
//! least recently used entries go. A key asked for while it is being loaded waits for that load
//! instead of starting another ("single flight"); the load goes on while anyone waits for it, and
//! stops when all of them gave up (a query past its deadline stops reading). A value heavier than
//! the whole budget is handed out but not kept — a cache of budget 0 only joins concurrent
//! loads.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};

/// What a cached value costs in bytes (an estimate of its heap and inline size).
pub trait Weigh {
    /// Bytes held.
    fn weight(&self) -> usize;
}

type Loading<V, E> = Shared<BoxFuture<'static, Result<Arc<V>, Arc<E>>>>;
type WeakLoading<V, E> = WeakShared<BoxFuture<'static, Result<Arc<V>, Arc<E>>>>;

struct Inner<K, V, E> {
    entries: HashMap<K, (Arc<V>, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
    /// Loads under way; an entry whose waiters all left no longer upgrades.
    loading: HashMap<K, WeakLoading<V, E>>,
    bytes: usize,
    tick: u64,
}

/// Counters of a cache, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups answered from the cache (or from a load already under way).
    pub hits: AtomicU64,
    /// Lookups that started a load.
    pub misses: AtomicU64,
    /// Entries evicted to stay within the budget.
    pub evictions: AtomicU64,
}

/// A byte-bounded LRU cache with single-flight loads. A clone is a handle on the same cache.
pub struct Cache<K, V, E> {
    inner: Arc<Mutex<Inner<K, V, E>>>,
    max_bytes: usize,
    stats: Arc<Stats>,
}

impl<K, V, E> Clone for Cache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_bytes: self.max_bytes,
            stats: self.stats.clone(),
        }
    }
}

impl<K, V, E> Cache<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Weigh + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// An empty cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                loading: HashMap::new(),
                bytes: 0,
                tick: 0,
            })),
            max_bytes,
            stats: Arc::default(),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hit, miss and eviction counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V, E>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` if it is held (it becomes the most recently used).
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut g = self.lock();
        let v = touch(&mut g, key)?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    /// The value of `key` if it is held, without counting a use or making it recent.
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        self.lock().entries.get(key).map(|(v, _)| v.clone())
    }

    /// Whether `key` is held or being loaded now (a look that neither counts nor reorders; the
    /// answer may be stale by the time it is used, so it only decides what to read together).
    pub fn knows(&self, key: &K) -> bool {
        let g = self.lock();
        g.entries.contains_key(key) || g.loading.get(key).is_some_and(|w| w.upgrade().is_some())
    }

    /// The value of `key`, loaded by `load` if it is neither held nor being loaded.
    pub async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<Arc<V>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let shared = {
            let mut g = self.lock();
            if let Some(v) = touch(&mut g, &key) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v);
            }
            if let Some(f) = g.loading.get(&key).and_then(WeakShared::upgrade) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                f
            } else {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let (inner, stats, max, k) = (
                    self.inner.clone(),
                    self.stats.clone(),
                    self.max_bytes,
                    key.clone(),
                );
                let fut = load();
                let f: Loading<V, E> = async move {
                    let out = fut.await.map(Arc::new).map_err(Arc::new);
                    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
                    g.loading.remove(&k);
                    if let Ok(v) = &out {
                        insert(&mut g, k, v.clone(), max, &stats);
                    }
                    out
                }
                .boxed()
                .shared();
                if g.loading.len() > 1024 {
                    g.loading.retain(|_, w| w.upgrade().is_some());
                }
                g.loading
                    .insert(key, f.downgrade().expect("not yet polled"));
                f
            }
        };
        shared.await
    }

    /// Keeps `value` under `key` (replacing what was there).
    pub fn put(&self, key: K, value: Arc<V>) {
        let mut g = self.lock();
        insert(&mut g, key, value, self.max_bytes, &self.stats);
    }
}

fn touch<K: Eq + Hash + Clone, V, E>(g: &mut Inner<K, V, E>, key: &K) -> Option<Arc<V>> {
    g.tick += 1;
    let tick = g.tick;
    let (v, last) = g.entries.get_mut(key)?;
    let old = std::mem::replace(last, tick);
    let v = v.clone();
    g.order.remove(&old);
    g.order.insert(tick, key.clone());
    Some(v)
}

fn insert<K: Eq + Hash + Clone, V: Weigh, E>(
    g: &mut Inner<K, V, E>,
    key: K,
    value: Arc<V>,
    max_bytes: usize,
    stats: &Stats,
) {
    let w = value.weight();
    if let Some((old, last)) = g.entries.remove(&key) {
        g.bytes -= old.weight();
        g.order.remove(&last);
    }
    if w > max_bytes {
        return;
    }
    while g.bytes.saturating_add(w) > max_bytes {
        let Some((_, k)) = g.order.pop_first() else {
            break;
        };
        if let Some((old, _)) = g.entries.remove(&k) {
            g.bytes -= old.weight();
            stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
    g.tick += 1;
    let tick = g.tick;
    g.order.insert(tick, key.clone());
    g.entries.insert(key, (value, tick));
    g.bytes += w;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    struct Blob(usize);
    impl Weigh for Blob {
        fn weight(&self) -> usize {
            self.0
        }
    }

    type C = Cache<u32, Blob, String>;

    #[tokio::test]
    async fn the_least_recently_used_go_first_and_the_budget_holds() {
        let c = C::new(100);
        for k in 0..4 {
            c.get_or_load(k, || async move { Ok(Blob(30)) })
                .await
                .unwrap();
        }
        // 4 × 30 > 100: key 0 went.
        assert_eq!((c.len(), c.bytes()), (3, 90));
        assert!(c.get(&0).is_none());
        assert!(c.knows(&3) && !c.knows(&0));
        // Using 1 makes 2 the oldest.
        assert!(c.get(&1).is_some());
        c.put(9, Arc::new(Blob(30)));
        assert!(c.get(&2).is_none());
        assert!(c.get(&1).is_some() && c.get(&9).is_some());
        assert!(c.bytes() <= 100);
        // Too heavy to keep, but handed out.
        let big = c.get_or_load(50, || async { Ok(Blob(500)) }).await.unwrap();
        assert_eq!(big.0, 500);
        assert!(c.get(&50).is_none());
        assert!(c.bytes() <= 100);
    }

    #[tokio::test]
    async fn a_key_is_loaded_once_however_many_ask() {
        let c = Arc::new(C::new(1000));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, loads) = (c.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_load(7, || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Blob(10))
                })
                .await
                .map(|b| b.0)
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(c.knows(&7), "a key being loaded is known");
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 10);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(c.stats().misses.load(Ordering::SeqCst), 1);
        assert_eq!(c.stats().hits.load(Ordering::SeqCst), 15);
    }

    #[tokio::test]
    async fn a_failed_load_is_not_kept_and_a_load_nobody_waits_for_stops() {
        let c = Arc::new(C::new(1000));
        let e = c
            .get_or_load(1, || async { Err("lake down".to_owned()) })
            .await
            .err()
            .unwrap();
        assert_eq!(*e, "lake down");
        assert!(c.get(&1).is_none());
        assert_eq!(
            c.get_or_load(1, || async { Ok(Blob(5)) }).await.unwrap().0,
            5
        );
        // The only caller gives up: its load stops, and the next caller loads anew.
        let finished = Arc::new(AtomicUsize::new(0));
        let (c2, f2) = (c.clone(), finished.clone());
        let first = tokio::spawn(async move {
            c2.get_or_load(2, || async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                f2.fetch_add(1, Ordering::SeqCst);
                Ok(Blob(6))
            })
            .await
            .map(|b| b.0)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let second = c.get_or_load(2, || async { Ok(Blob(99)) }).await.unwrap();
        assert_eq!(second.0, 99, "the abandoned load was not joined");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "the abandoned load stopped"
        );
        // A cache of budget 0 keeps nothing but still joins concurrent loads.
        let none = C::new(0);
        assert_eq!(
            none.get_or_load(1, || async { Ok(Blob(1)) })
                .await
                .unwrap()
                .0,
            1
        );
        assert!(none.is_empty());
    }
}
