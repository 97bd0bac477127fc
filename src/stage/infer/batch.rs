//! Batching chunks of several items into one model call.
//!
//! Each worker hands its chunks (at most `batch_size` at a time) to the model's [`Batcher`]
//! and blocks. One waiting worker leads: it waits up to `batch_wait_ms` for the queue to
//! hold a full batch (or a request from every item run in progress, when no one else can
//! add to it), takes whole requests up to `batch_size` chunks (its own or others'),
//! runs them in one call with its own session, and hands every request its rows of the
//! output. Then the next waiting worker leads. No thread of its own, nothing to shut down.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One model call over `n` chunks laid out one after another: the first output, flattened
/// (`n` equal rows), or the runtime's message.
pub type Exec<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>, String> + 'a;

/// A model's shared batch queue.
pub struct Batcher {
    max: usize,
    wait: Duration,
    q: Mutex<Queue>,
    cv: Condvar,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    /// (request id, chunks, values)
    pending: VecDeque<(u64, usize, Vec<f32>)>,
    pending_chunks: usize,
    /// Item runs that may still send chunks: a leader stops waiting once each has a request
    /// queued (no one else can add to the batch).
    active: usize,
    leading: bool,
    done: HashMap<u64, Result<Vec<f32>, String>>,
}

impl Batcher {
    /// A queue for calls of at most `max` chunks, waiting at most `wait` to fill one.
    pub fn new(max: usize, wait: Duration) -> Self {
        Batcher {
            max: max.max(1),
            wait,
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        }
    }

    /// An item run starts sending chunks.
    pub fn enter(&self) {
        self.q.lock().unwrap_or_else(|p| p.into_inner()).active += 1;
    }

    /// An item run is finished (or dropped).
    pub fn leave(&self) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        q.active = q.active.saturating_sub(1);
        self.cv.notify_all();
    }

    /// Runs `chunks` chunks (`values`, one after another) in a batch, maybe with other
    /// workers' chunks; `exec` runs the call if this worker leads it. Returns this request's
    /// rows of the output.
    ///
    /// # Errors
    /// The call failed (every request in it gets the message), or the output cannot be
    /// split into one row per chunk.
    pub fn run(
        &self,
        chunks: usize,
        values: Vec<f32>,
        exec: &mut Exec<'_>,
    ) -> Result<Vec<f32>, String> {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let id = q.next_id;
        q.next_id += 1;
        q.pending_chunks += chunks;
        q.pending.push_back((id, chunks, values));
        self.cv.notify_all();
        loop {
            if let Some(r) = q.done.remove(&id) {
                return r;
            }
            if q.leading {
                q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.leading = true;
            let deadline = Instant::now() + self.wait;
            while q.pending_chunks < self.max && q.pending.len() < q.active {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                q = self
                    .cv
                    .wait_timeout(q, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let mut taken = Vec::new();
            let mut n = 0;
            while let Some(&(_, c, _)) = q.pending.front() {
                if n > 0 && n + c > self.max {
                    break;
                }
                let r = q.pending.pop_front().expect("front exists");
                n += c;
                q.pending_chunks -= c;
                taken.push(r);
            }
            drop(q);
            let mut input = Vec::with_capacity(taken.iter().map(|t| t.2.len()).sum());
            for t in &taken {
                input.extend_from_slice(&t.2);
            }
            // A panicking runtime must not leave the queue without a leader.
            let out = catch_unwind(AssertUnwindSafe(|| exec(&input, n)))
                .unwrap_or_else(|_| Err("the runtime panicked".into()));
            q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            match out {
                Ok(out) if n > 0 && out.len().is_multiple_of(n) && !out.is_empty() => {
                    let row = out.len() / n;
                    let mut at = 0;
                    for (rid, c, _) in taken {
                        q.done.insert(rid, Ok(out[at..at + c * row].to_vec()));
                        at += c * row;
                    }
                }
                Ok(out) => {
                    let msg = format!(
                        "a batch of {n} chunks gave {} output values: not one row per chunk \
                         (does the model's first axis take the batch?)",
                        out.len()
                    );
                    for (rid, _, _) in taken {
                        q.done.insert(rid, Err(msg.clone()));
                    }
                }
                Err(e) => {
                    for (rid, _, _) in taken {
                        q.done.insert(rid, Err(e.clone()));
                    }
                }
            }
            q.leading = false;
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A "model" that returns each chunk's sum, and counts its calls and their sizes.
    fn summing<'a>(
        calls: &'a AtomicUsize,
        widest: &'a AtomicUsize,
    ) -> impl FnMut(&[f32], usize) -> Result<Vec<f32>, String> + 'a {
        move |x: &[f32], n: usize| {
            calls.fetch_add(1, Ordering::SeqCst);
            widest.fetch_max(n, Ordering::SeqCst);
            let w = x.len() / n;
            Ok(x.chunks(w).map(|c| c.iter().sum()).collect())
        }
    }

    #[test]
    fn requests_of_many_threads_share_calls_and_get_their_own_rows() {
        let b = Arc::new(Batcher::new(8, Duration::from_secs(5)));
        let calls = Arc::new(AtomicUsize::new(0));
        let widest = Arc::new(AtomicUsize::new(0));
        let t0 = std::time::Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (b, calls, widest) = (b.clone(), calls.clone(), widest.clone());
                b.enter();
                std::thread::spawn(move || {
                    for r in 0..10 {
                        // 2 chunks of 3 values, distinct per thread and request.
                        let base = (t * 100 + r * 2) as f32;
                        let v = vec![base, base, base, base + 1.0, base + 1.0, base + 1.0];
                        let out = b.run(2, v, &mut summing(&calls, &widest)).unwrap();
                        assert_eq!(out, vec![3.0 * base, 3.0 * (base + 1.0)]);
                    }
                    b.leave();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Never waited out the 5 s: a batch stops waiting once every run has a request in.
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        let calls = calls.load(Ordering::SeqCst);
        // 80 chunks in calls of at most 8: fewer calls than the 40 requests.
        assert!(calls < 40, "{calls} calls for 40 requests");
        assert!(widest.load(Ordering::SeqCst) <= 8);
        assert!(
            widest.load(Ordering::SeqCst) > 2,
            "no call took two requests"
        );
    }

    #[test]
    fn failures_and_bad_shapes_reach_every_request_and_a_panic_frees_the_queue() {
        let b = Batcher::new(4, Duration::ZERO);
        let err = b
            .run(2, vec![0.0; 4], &mut |_: &[f32], _: usize| {
                Err("refused".into())
            })
            .unwrap_err();
        assert_eq!(err, "refused");
        let err = b
            .run(2, vec![0.0; 4], &mut |_: &[f32], _: usize| Ok(vec![1.0; 3]))
            .unwrap_err();
        assert!(err.contains("not one row per chunk"), "{err}");
        let err = b
            .run(
                1,
                vec![0.0; 2],
                &mut |_: &[f32], _: usize| -> Result<Vec<f32>, String> { panic!("boom") },
            )
            .unwrap_err();
        assert!(err.contains("panicked"), "{err}");
        // Still usable.
        let ok = b
            .run(1, vec![2.0; 2], &mut |x: &[f32], _: usize| {
                Ok(vec![x.iter().sum()])
            })
            .unwrap();
        assert_eq!(ok, vec![4.0]);
    }
}
