//! Memory per queued task, counted exactly on the heap (dhat) plus the inline size
//! of the records, beyond the description and metadata bytes themselves; and the
//! whole memory per queued task when each carries 10 KiB of metadata (which the
//! queue does not keep):
//! `cargo run --release -p coordinator-scheduler --example core_memory`

use coordinator_scheduler::{NewTask, Scheduler, SchedulerConfig};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Heap bytes per task for `N` queued tasks, each with `metadata`.
fn heap_per_task(ids: &[String], description: &str, metadata: &str) -> f64 {
    let before = dhat::HeapStats::get().curr_bytes;
    let mut s = Scheduler::new(SchedulerConfig::default());
    for (i, id) in ids.iter().enumerate() {
        let mut task =
            NewTask::new(id.as_str(), description).with_capabilities([format!("cap-{}", i % 10)]);
        task.submitted_by = Some("admin".into());
        task.metadata = metadata.to_owned();
        s.handle_submit(i as u64, task).expect("submit");
        while s.poll_change().is_some() {}
    }
    let after = dhat::HeapStats::get().curr_bytes;
    std::hint::black_box(&s);
    (after - before) as f64 / ids.len() as f64
}

fn main() {
    const N: usize = 100_000;
    let _profiler = dhat::Profiler::builder().testing().build();
    // Ids as the coordinator makes them (36-character UUID text), made before counting.
    let ids: Vec<String> = (0..N)
        .map(|i| format!("01a20d44-5f77-7abc-b7b3-{i:012x}"))
        .collect();
    let description = "x";
    // Description and metadata bytes are not overhead; everything else is.
    let payload = description.len() + "{}".len();
    let per_task = heap_per_task(&ids, description, "{}") - payload as f64;
    println!(
        "{N} queued tasks over 10 capability sets (scheduler + queue, indexes included): {per_task:.0} bytes of overhead per task (36-byte ids included)"
    );
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(10 * 1024 - 10));
    let whole = heap_per_task(&ids, description, &big);
    println!(
        "same with {} bytes of metadata each: {whole:.0} bytes per task in all (the metadata stays in storage)",
        big.len()
    );
    println!(
        "inline record size: Task {} bytes, HistoryEntry {} bytes",
        std::mem::size_of::<coordinator_queue::Task>(),
        std::mem::size_of::<coordinator_queue::HistoryEntry>()
    );
}
