//! Lock helpers: the one place that decides what a poisoned lock means.
//!
//! A lock is poisoned when a thread panicked while holding it. The crash policy (see
//! `store::health`) marks the store failed on any panic, so writes are refused from then on;
//! what a lock guards is still read through (for reads, stats, health and a clean shutdown)
//! instead of turning one panic into a cascade of them.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

pub fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, timeout)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}

pub fn wait_timeout_while<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
    condition: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    cv.wait_timeout_while(guard, timeout, condition)
        .map(|(g, _)| g)
        .unwrap_or_else(|p| p.into_inner().0)
}

/// The current thread's name, for messages about it (FUSE workers have none: their id).
pub fn thread_name() -> String {
    let t = std::thread::current();
    t.name()
        .map_or_else(|| format!("{:?}", t.id()), str::to_string)
}

/// Run `first` on `items[0]` on the calling thread and `each` on every other item on a
/// scoped thread of its own; the others' results, in order. A panic on one of those threads
/// is raised again here, as if it had happened on the calling thread.
pub fn fan_out<'a, P: Sync, T: Send>(
    items: &'a [P],
    first: impl FnOnce(&'a P),
    each: impl Fn(&'a P) -> T + Sync,
) -> Vec<T> {
    let Some((head, rest)) = items.split_first() else {
        return Vec::new();
    };
    let each = &each;
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|item| scope.spawn(move || each(item)))
            .collect();
        first(head);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// What a caught panic said.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
