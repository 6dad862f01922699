//! The one wasmtime `Engine` of the process and the epoch ticker that turns a
//! guest call that runs too long into a trap.
//!
//! Epoch interruption (<https://docs.wasmtime.dev/api/wasmtime/struct.Config.html#method.epoch_interruption>)
//! costs a load and compare per loop back-edge and function entry, far less
//! than fuel metering. The ticker thread holds only a weak engine reference
//! and parks while no guest call is in flight, so an idle daemon does not
//! wake up every few milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

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

    /// How many epochs make `budget` (at least one).
    pub fn ticks_for(&self, budget: Duration) -> u64 {
        (budget.as_nanos() / self.tick.as_nanos().max(1)).max(1) as u64
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
