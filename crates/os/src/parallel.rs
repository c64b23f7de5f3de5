//! Threads for the build steps: how many, and a parallel map whose results keep the
//! items' order.

/// The threads a build may use: every core the process may run on (a `taskset` or a
/// cgroup limits them). Outputs never depend on the number.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` over `items` on `threads` threads; the results in the items' order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| Default::default()).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            *slots[i].lock().unwrap() = Some(f(item));
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, items.len().max(1)) {
            s.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().unwrap().expect("every item was mapped"))
        .collect()
}
