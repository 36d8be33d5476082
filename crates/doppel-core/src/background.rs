//! Work that runs on the machine's idle time: Monte Carlo studies and the twin's model
//! training share a server with ingest and queries, and must never slow them.
//!
//! [`on_threads`] runs a closure on a rayon pool of its own whose threads are on Linux's idle
//! scheduling class (SCHED_IDLE): they run only when no other thread wants the core. Every
//! rayon parallel iterator inside the closure (burn's CPU kernels, gemm, the simulator's runs)
//! uses that pool, not the global one. This module must never raise a thread's priority.

/// Runs `work` on a pool of `threads` (`None`: as many as rayon's global pool, all cores),
/// on idle time only when `background`. Neither given: `work` runs here, on the global pool.
/// The error is the pool's only; `work`'s own result comes back as it is.
pub fn on_threads<R: Send>(
    threads: Option<usize>,
    background: bool,
    work: impl FnOnce() -> R + Send,
) -> Result<R, rayon::ThreadPoolBuildError> {
    if threads.is_none() && !background {
        return Ok(work());
    }
    let n = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(n);
    let pool = match background {
        true => pool.start_handler(|_| idle_priority()),
        false => pool,
    };
    Ok(pool.build()?.install(work))
}

/// Puts the calling thread on Linux's idle scheduling class (SCHED_IDLE). One syscall,
/// through libc. Elsewhere, or if refused (lowering one's own priority needs no privilege, so
/// it should not be), the thread keeps its priority: slower for the others, never wrong.
pub fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread, and `param` is a valid sched_param for the
        // call's duration; the call reads it and changes nothing else.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

#[cfg(test)]
mod tests {
    use super::on_threads;

    /// Background work runs on threads of the idle class, and hands its result back.
    #[cfg(target_os = "linux")]
    #[test]
    fn background_work_runs_on_idle_threads() {
        let policy = on_threads(Some(2), true, || {
            // SAFETY: pid 0 is the calling thread: a read of its own policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        // The caller's own thread keeps its class.
        assert_ne!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
    }
}
