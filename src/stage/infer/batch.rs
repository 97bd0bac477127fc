//! Batching chunks of several items into one model call.
//!
//! Each worker hands its chunks (at most `batch_size` at a time) to the model's [`Batcher`]
//! and blocks. One waiting worker leads: it waits up to `batch_wait_ms` for the queue to
//! hold a full batch (or a request from every item run in progress, when no one else can
//! add to it), takes whole requests up to `batch_size` chunks (its own or others'),
//! runs them in one call with its own session, and hands every request its rows of the
//! output. Then the next waiting worker leads. No thread of its own, nothing to shut down.
//!
//! A model with recurrent state sends one chunk per request together with its item's state
//! row; the call stacks the rows along the state's batch axis ([`StateRows`]) and hands
//! each request its row of the next state, so every item keeps its own state.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One model call over `n` chunks laid out one after another, with the stacked state (empty
/// without one): the first output, flattened (`n` equal rows), and the next stacked state
/// (empty without one), or the runtime's message.
pub type Exec<'a> = dyn FnMut(&[f32], usize, &[f32]) -> Result<(Vec<f32>, Vec<f32>), String> + 'a;

/// What a request gets back: its rows of the first output and its row of the next state.
pub type Rows = Result<(Vec<f32>, Vec<f32>), String>;

/// How per-item state rows stack in a call: a state of shape `[a.., 1, b..]` (batch axis of
/// length 1 per item) is `outer = prod(a)` blocks of `inner = prod(b)` values, and `n` items
/// make `[a.., n, b..]`: block `o` holds every item's block `o` in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRows {
    /// Values before the batch axis (product of the leading dimensions).
    pub outer: usize,
    /// Values after it (product of the trailing dimensions).
    pub inner: usize,
}

impl StateRows {
    /// For `shape` with its batch axis at `axis` (where `shape[axis]` is 1).
    pub fn of(shape: &[usize], axis: usize) -> Self {
        StateRows {
            outer: shape[..axis].iter().product(),
            inner: shape[axis + 1..].iter().product(),
        }
    }

    /// One item's values.
    fn len(self) -> usize {
        self.outer * self.inner
    }

    /// The rows of `rows.len()` items stacked into one state.
    fn stack(self, rows: &[&[f32]]) -> Vec<f32> {
        let n = rows.len();
        let mut out = vec![0.0; self.len() * n];
        for (j, r) in rows.iter().enumerate() {
            for o in 0..self.outer {
                let to = (o * n + j) * self.inner;
                out[to..to + self.inner].copy_from_slice(&r[o * self.inner..(o + 1) * self.inner]);
            }
        }
        out
    }

    /// Item `j`'s row of a state stacked for `n` items.
    fn row(self, stacked: &[f32], n: usize, j: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for o in 0..self.outer {
            let from = (o * n + j) * self.inner;
            out.extend_from_slice(&stacked[from..from + self.inner]);
        }
        out
    }
}

/// A model's shared batch queue.
pub struct Batcher {
    max: usize,
    wait: Duration,
    state: Option<StateRows>,
    q: Mutex<Queue>,
    cv: Condvar,
}

/// A queued request: id, chunks, values, state row (empty without state).
type Request = (u64, usize, Vec<f32>, Vec<f32>);

#[derive(Default)]
struct Queue {
    next_id: u64,
    pending: VecDeque<Request>,
    pending_chunks: usize,
    /// Item runs that may still send chunks: a leader stops waiting once each has a request
    /// queued (no one else can add to the batch).
    active: usize,
    leading: bool,
    done: HashMap<u64, Rows>,
}

impl Batcher {
    /// A queue for calls of at most `max` chunks, waiting at most `wait` to fill one; with
    /// `state`, requests carry state rows stacked as it says.
    pub fn new(max: usize, wait: Duration, state: Option<StateRows>) -> Self {
        Batcher {
            max: max.max(1),
            wait,
            state,
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
    /// workers' chunks; `exec` runs the call if this worker leads it. With state, a request
    /// is one chunk and `state` its item's row. Returns this request's rows of the output
    /// and its row of the next state.
    ///
    /// # Errors
    /// The call failed (every request in it gets the message), or the output (or next
    /// state) cannot be split into one row per chunk.
    pub fn run(
        &self,
        chunks: usize,
        values: Vec<f32>,
        state: Vec<f32>,
        exec: &mut Exec<'_>,
    ) -> Rows {
        if let Some(rows) = self.state {
            if chunks != 1 || state.len() != rows.len() {
                return Err(format!(
                    "a request with state is one chunk and {} state values, not {chunks} \
                     chunk(s) and {}",
                    rows.len(),
                    state.len()
                ));
            }
        }
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let id = q.next_id;
        q.next_id += 1;
        q.pending_chunks += chunks;
        q.pending.push_back((id, chunks, values, state));
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
            while let Some(&(_, c, _, _)) = q.pending.front() {
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
            let stacked = match self.state {
                Some(rows) => rows.stack(&taken.iter().map(|t| t.3.as_slice()).collect::<Vec<_>>()),
                None => Vec::new(),
            };
            // A panicking runtime must not leave the queue without a leader.
            let out = catch_unwind(AssertUnwindSafe(|| exec(&input, n, &stacked)))
                .unwrap_or_else(|_| Err("the runtime panicked".into()));
            q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            let state_ok = |next: &[f32]| match self.state {
                Some(rows) => next.len() == rows.len() * n,
                None => true,
            };
            match out {
                Ok((out, next))
                    if n > 0
                        && out.len().is_multiple_of(n)
                        && !out.is_empty()
                        && state_ok(&next) =>
                {
                    let row = out.len() / n;
                    let mut at = 0;
                    for (j, (rid, c, _, _)) in taken.into_iter().enumerate() {
                        let st = self
                            .state
                            .map_or_else(Vec::new, |rows| rows.row(&next, n, j));
                        q.done.insert(rid, Ok((out[at..at + c * row].to_vec(), st)));
                        at += c * row;
                    }
                }
                Ok((out, next)) => {
                    let msg = if state_ok(&next) {
                        format!(
                            "a batch of {n} chunks gave {} output values: not one row per chunk \
                             (does the model's first axis take the batch?)",
                            out.len()
                        )
                    } else {
                        format!(
                            "a batch of {n} chunks gave a next state of {} values where {} were \
                             expected (is state.batch_axis the state's batch axis?)",
                            next.len(),
                            self.state.map_or(0, StateRows::len) * n
                        )
                    };
                    for (rid, _, _, _) in taken {
                        q.done.insert(rid, Err(msg.clone()));
                    }
                }
                Err(e) => {
                    for (rid, _, _, _) in taken {
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
    ) -> impl FnMut(&[f32], usize, &[f32]) -> Rows + 'a {
        move |x: &[f32], n: usize, _: &[f32]| {
            calls.fetch_add(1, Ordering::SeqCst);
            widest.fetch_max(n, Ordering::SeqCst);
            let w = x.len() / n;
            Ok((x.chunks(w).map(|c| c.iter().sum()).collect(), Vec::new()))
        }
    }

    #[test]
    fn requests_of_many_threads_share_calls_and_get_their_own_rows() {
        let b = Arc::new(Batcher::new(8, Duration::from_secs(5), None));
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
                        let (out, st) = b
                            .run(2, v, Vec::new(), &mut summing(&calls, &widest))
                            .unwrap();
                        assert_eq!(out, vec![3.0 * base, 3.0 * (base + 1.0)]);
                        assert!(st.is_empty());
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
        let b = Batcher::new(4, Duration::ZERO, None);
        let err = b
            .run(
                2,
                vec![0.0; 4],
                Vec::new(),
                &mut |_: &[f32], _: usize, _: &[f32]| Err("refused".into()),
            )
            .unwrap_err();
        assert_eq!(err, "refused");
        let err = b
            .run(
                2,
                vec![0.0; 4],
                Vec::new(),
                &mut |_: &[f32], _: usize, _: &[f32]| Ok((vec![1.0; 3], Vec::new())),
            )
            .unwrap_err();
        assert!(err.contains("not one row per chunk"), "{err}");
        let err = b
            .run(1, vec![0.0; 2], Vec::new(), &mut |_: &[f32],
                                                    _: usize,
                                                    _: &[f32]|
             -> Rows {
                panic!("boom")
            })
            .unwrap_err();
        assert!(err.contains("panicked"), "{err}");
        // Still usable.
        let ok = b
            .run(
                1,
                vec![2.0; 2],
                Vec::new(),
                &mut |x: &[f32], _: usize, _: &[f32]| Ok((vec![x.iter().sum()], Vec::new())),
            )
            .unwrap();
        assert_eq!(ok.0, vec![4.0]);
    }

    /// A recurrent "model" with a `[2, batch, 3]` state: each chunk's output is its item's
    /// state[0][.][0] before the chunk, and the next state adds the chunk's sum times
    /// (block + 1) to every value of the item's row.
    fn recurrent<'a>(
        calls: &'a AtomicUsize,
        widest: &'a AtomicUsize,
    ) -> impl FnMut(&[f32], usize, &[f32]) -> Rows + 'a {
        move |x: &[f32], n: usize, st: &[f32]| {
            calls.fetch_add(1, Ordering::SeqCst);
            widest.fetch_max(n, Ordering::SeqCst);
            assert_eq!(st.len(), 2 * n * 3);
            let w = x.len() / n;
            let out = (0..n).map(|j| st[j * 3]).collect();
            let mut next = st.to_vec();
            for o in 0..2 {
                for j in 0..n {
                    let sum: f32 = x[j * w..(j + 1) * w].iter().sum();
                    for k in 0..3 {
                        next[(o * n + j) * 3 + k] += sum * (o + 1) as f32;
                    }
                }
            }
            Ok((out, next))
        }
    }

    #[test]
    fn state_rows_stay_with_their_items_in_shared_calls() {
        let rows = StateRows::of(&[2, 1, 3], 1);
        assert_eq!(rows, StateRows { outer: 2, inner: 3 });
        let b = Arc::new(Batcher::new(8, Duration::from_secs(5), Some(rows)));
        let calls = Arc::new(AtomicUsize::new(0));
        let widest = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (b, calls, widest) = (b.clone(), calls.clone(), widest.clone());
                b.enter();
                std::thread::spawn(move || {
                    // Each item starts from its own state; the expected values follow it alone.
                    let mut state: Vec<f32> = (0..6).map(|k| (t * 10 + k) as f32).collect();
                    let mut want = state.clone();
                    for r in 0..20 {
                        let chunk = vec![(t + r) as f32, 1.0];
                        let first = want[0];
                        let sum: f32 = chunk.iter().sum();
                        for (i, v) in want.iter_mut().enumerate() {
                            *v += sum * (i / 3 + 1) as f32;
                        }
                        let (out, next) = b
                            .run(1, chunk, state, &mut recurrent(&calls, &widest))
                            .unwrap();
                        assert_eq!(out, vec![first], "thread {t}, chunk {r}");
                        assert_eq!(next, want, "thread {t}, chunk {r}");
                        state = next;
                    }
                    b.leave();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(calls.load(Ordering::SeqCst) < 80, "no call was shared");
        assert!(widest.load(Ordering::SeqCst) > 1);
        // A request with state is one chunk with a whole row; a wrong next state fails it.
        let err = b
            .run(
                2,
                vec![0.0; 4],
                vec![0.0; 6],
                &mut recurrent(&calls, &widest),
            )
            .unwrap_err();
        assert!(err.contains("one chunk"), "{err}");
        let err = b
            .run(
                1,
                vec![0.0; 2],
                vec![0.0; 6],
                &mut |_: &[f32], _: usize, _: &[f32]| Ok((vec![1.0], vec![0.0; 5])),
            )
            .unwrap_err();
        assert!(err.contains("batch_axis"), "{err}");
    }
}
