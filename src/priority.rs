//! The one way a thread of the daemon gives way to the others.

/// The nice value of the threads that use the cores the rest leave idle:
/// the evaluation threads (`evaluate::thread_pool`), whose large tick's
/// readers must never delay its claims, the deliverer or the loop, and
/// SQLite's checkpointer (`store::sqlite::wal::checkpointer`), whose
/// copying must not take the cores from the claims and the deliveries.
pub const BACKGROUND: libc::c_int = 5;

/// Lowers the calling thread's priority to [`BACKGROUND`].
pub fn give_way() {
    // SAFETY: plain system calls. On Linux the nice value is a thread's,
    // named by its thread id. Raising one's own is always allowed; a
    // failure only leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND);
    }
}
