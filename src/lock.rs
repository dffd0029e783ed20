//! The one way the daemon takes a lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Takes `mutex`, even if a thread panicked while holding it. Every mutex
/// here guards state that stays valid between any two of its updates (a
/// back-off deadline, the memory of a failure already logged, a connection
/// error to report): a panic elsewhere must not stop the daemon's other
/// threads from going on with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
