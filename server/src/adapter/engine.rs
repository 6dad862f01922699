//! The one wasmtime `Engine` of the process and the epoch ticker that turns a
//! guest call that runs too long into a trap.
//!
//! Epoch interruption (<https://docs.wasmtime.dev/api/wasmtime/struct.Config.html#method.epoch_interruption>)
//! costs a load and compare per loop back-edge and function entry, far less
//! than fuel metering. The ticker thread holds only a weak engine reference
//! and parks while no guest call is in flight, so an idle daemon does not
//! wake up every few milliseconds.
//!
//! Guest calls run on the async runtime's workers (every export is called
//! with `call_async`), and a call never holds a worker for more than about
//! a tick: at each epoch the store's [`CallBudget`] decides, in wasmtime's
//! epoch callback (<https://docs.wasmtime.dev/api/wasmtime/struct.Store.html#method.epoch_deadline_callback>),
//! whether the call yields to the runtime (`UpdateDeadline::YieldCustom`
//! with `tokio::task::yield_now`, which lets the worker poll its I/O driver
//! and other tasks before it resumes the call) or traps because its budget
//! is spent. A call shorter than a tick (every translation of an ordinary
//! record) never reaches the callback, so this costs nothing per record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread, ThreadId};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, OptLevel, UpdateDeadline};

/// Builds the process's engine. Every knob is set here and nowhere else.
pub fn build_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Guest calls are bounded in time by epochs (see `Ticker`).
    config.epoch_interruption(true);
    // Adapters are components; the model is on by default, said for clarity.
    config.wasm_component_model(true);
    // Optimise for run time: adapters are compiled once and cached.
    config.cranelift_opt_level(OptLevel::Speed);
    // A guest call's own stack. 1 MiB is ample for JSON translation and
    // bounds a runaway recursion to a clean stack-overflow trap.
    config.max_wasm_stack(1 << 20);
    // The host stack a call runs on (it must exceed max_wasm_stack).
    config.async_stack_size(2 << 20);
    // Hot reload replaces modules while old stores still run them; the
    // default copy-on-write memory init keeps instantiation cheap.
    config.memory_init_cow(true);
    Engine::new(&config).map_err(|e| anyhow::anyhow!("failed to create the wasmtime engine: {e}"))
}

/// The processor time the calling thread has used
/// (`CLOCK_THREAD_CPUTIME_ID`); None if the clock cannot be read.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live,
    // properly aligned local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Where the guest's running time is measured from.
#[derive(Clone, Copy)]
enum Mark {
    /// Wall time (a call's start: reading the thread's CPU clock is a
    /// system call, too dear for every record).
    Wall(Instant),
    /// The CPU time of the thread the guest runs on: the guest's own time,
    /// whatever else the machine is doing.
    Cpu(ThreadId, Duration),
}

impl Mark {
    fn now() -> Mark {
        match thread_cpu_time() {
            Some(cpu) => Mark::Cpu(thread::current().id(), cpu),
            None => Mark::Wall(Instant::now()),
        }
    }

    /// The guest's running time from `self` to `now` (`tick` when the two
    /// were taken on different threads and cannot be compared; at most
    /// `tick` from a wall-time mark).
    fn until(self, now: Mark, wall: Instant, tick: Duration) -> Duration {
        match (self, now) {
            (Mark::Cpu(a, t0), Mark::Cpu(b, t1)) if a == b => t1.saturating_sub(t0),
            (Mark::Cpu(..), _) => tick,
            // The first callback comes at the first tick after the call
            // began: longer means the thread was descheduled meanwhile.
            (Mark::Wall(t0), _) => wall.saturating_duration_since(t0).min(tick),
        }
    }
}

/// The running guest call's time, kept in its store for the epoch
/// callback. The budget counts the time the guest itself runs (the first
/// tick in wall time, then its thread's CPU time), not the time it waits
/// for a worker after yielding nor the time the machine gives to other
/// processes: a busy daemon or machine does not make a well-behaved call
/// trap, and a looping one still traps after running its budget.
pub struct CallBudget {
    /// Guest time left in this call.
    left: Duration,
    /// Since when the guest has been running (call start, last tick, or
    /// resumption after a yield).
    since: Mark,
    /// Set by the yield future when the runtime polls the call again.
    resumed: Arc<Mutex<Option<Mark>>>,
    /// The ticker's period.
    tick: Duration,
}

impl CallBudget {
    pub fn new(tick: Duration) -> CallBudget {
        CallBudget {
            left: Duration::ZERO,
            since: Mark::Wall(Instant::now()),
            resumed: Arc::new(Mutex::new(None)),
            tick,
        }
    }

    /// Starts a call with `budget` of guest time.
    pub fn start(&mut self, budget: Duration) {
        self.left = budget;
        self.since = Mark::Wall(Instant::now());
        *self.resumed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The epoch callback: trap when the budget is spent, otherwise yield
    /// (or, right after a resumption, keep running until the next tick so
    /// that a call always makes progress between yields).
    pub fn on_epoch(&mut self) -> UpdateDeadline {
        let wall = Instant::now();
        let now = Mark::now();
        let resumed = self
            .resumed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let just_resumed = resumed.is_some();
        if let Some(mark) = resumed {
            self.since = mark;
        }
        let ran = self.since.until(now, wall, self.tick);
        self.left = self.left.saturating_sub(ran);
        self.since = now;
        if self.left.is_zero() {
            return UpdateDeadline::Interrupt;
        }
        if just_resumed {
            // The epoch moved on while the call waited for a worker: run
            // until the next tick before yielding again.
            return UpdateDeadline::Continue(1);
        }
        let resumed = self.resumed.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                // The call resumes in this same poll, on this thread.
                *resumed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Mark::now());
            }),
        )
    }
}

/// Drives the engine's epoch while guest calls are in flight.
pub struct Ticker {
    in_flight: AtomicUsize,
    thread: Thread,
    tick: Duration,
}

impl Ticker {
    /// Starts the ticker thread for `engine`, one epoch per `tick`.
    pub fn start(engine: &Engine, tick: Duration) -> anyhow::Result<Arc<Ticker>> {
        let weak = engine.weak();
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Ticker>>();
        let handle = thread::Builder::new()
            .name("amarre-epoch".into())
            .spawn(move || {
                let Ok(ticker) = rx.recv() else { return };
                loop {
                    if ticker.in_flight.load(Ordering::Acquire) == 0 {
                        thread::park();
                        continue;
                    }
                    thread::sleep(ticker.tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        let ticker = Arc::new(Ticker {
            in_flight: AtomicUsize::new(0),
            thread: handle.thread().clone(),
            tick,
        });
        tx.send(ticker.clone())
            .map_err(|_| anyhow::anyhow!("the epoch thread exited at start"))?;
        Ok(ticker)
    }

    /// The period of one epoch.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Marks a guest call in flight until the guard is dropped.
    pub fn enter(&self) -> TickGuard<'_> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        TickGuard(self)
    }
}

/// See [`Ticker::enter`].
pub struct TickGuard<'a>(&'a Ticker);

impl Drop for TickGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
