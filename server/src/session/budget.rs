//! The inbound byte budget of a session: client records on their way from
//! the socket readers to the session task are bounded in bytes (as well as
//! in records, by the channel).
//!
//! A reader charges each record before sending it ([`ByteBudget::acquire`]:
//! one compare-and-swap when there is room); the session task gives back
//! what a whole batch of records charged with one [`ByteBudget::release`]
//! after it took them. Nothing is locked unless a reader waits. The bound is
//! the one a semaphore gave (at most `cap` bytes in flight; a record larger
//! than the whole budget waits for an empty queue and then takes all of
//! it), without a permit object and a lock per record.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// At most `cap` bytes of records between the sockets and the session.
pub(crate) struct ByteBudget {
    cap: usize,
    used: AtomicUsize,
    /// Readers waiting for room (a release only wakes when there are).
    waiting: AtomicUsize,
    closed: AtomicBool,
    freed: Notify,
}

impl ByteBudget {
    pub(crate) fn new(cap: usize) -> ByteBudget {
        ByteBudget {
            cap: cap.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            freed: Notify::new(),
        }
    }

    /// What a record of `len` bytes is charged: at least 1, at most the
    /// whole budget.
    pub(crate) fn charge(&self, len: usize) -> usize {
        len.clamp(1, self.cap)
    }

    fn try_take(&self, want: usize) -> bool {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used + want > self.cap {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + want,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes `want` bytes (from [`ByteBudget::charge`]), waiting while the
    /// budget has no room. False once the budget is closed (the session
    /// ended).
    pub(crate) async fn acquire(&self, want: usize) -> bool {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            if self.try_take(want) {
                return true;
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // A release between the failed take and `enable` is seen here;
            // one after it wakes `freed` (it reads `waiting` after lowering
            // `used`).
            let closed = self.closed.load(Ordering::SeqCst);
            let took = !closed && self.try_take(want);
            if !closed && !took {
                freed.await;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if closed {
                return false;
            }
            if took {
                return true;
            }
        }
    }

    /// Gives back `n` bytes taken earlier (the sum over a batch).
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// The session ended: waiting and later acquires answer false.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn takes_while_there_is_room_and_waits_for_a_release() {
        let b = Arc::new(ByteBudget::new(100));
        assert!(b.acquire(60).await);
        assert!(b.acquire(40).await);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire(10).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "took bytes beyond the budget");
        b.release(100);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the release woke no waiter")
            .unwrap();
        assert!(got);
        assert_eq!(b.used.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn a_record_larger_than_the_budget_takes_all_of_it_once_empty() {
        let b = ByteBudget::new(100);
        assert_eq!(b.charge(1000), 100);
        assert_eq!(b.charge(0), 1);
        assert!(b.acquire(b.charge(1000)).await);
        assert!(!b.try_take(1));
        b.release(100);
        assert!(b.try_take(1));
    }

    #[tokio::test]
    async fn closing_answers_every_waiter_false() {
        let b = Arc::new(ByteBudget::new(10));
        assert!(b.acquire(10).await);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.acquire(5).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.close();
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("close woke no waiter")
                .unwrap();
            assert!(!got);
        }
        assert!(!b.acquire(1).await);
    }

    #[tokio::test]
    async fn many_readers_never_exceed_the_budget_and_all_finish() {
        let b = Arc::new(ByteBudget::new(1000));
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let readers: Vec<_> = (0..4)
            .map(|k| {
                let (b, tx, peak) = (b.clone(), tx.clone(), peak.clone());
                tokio::spawn(async move {
                    for i in 0..2000usize {
                        let want = b.charge(1 + (i * 7 + k * 13) % 300);
                        assert!(b.acquire(want).await);
                        peak.fetch_max(b.used.load(Ordering::SeqCst), Ordering::SeqCst);
                        tx.send(want).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        // The "session": takes what is queued, gives it back per batch.
        let consumer = tokio::spawn(async move {
            let mut total = 0;
            while let Some(first) = rx.recv().await {
                let mut batch = first;
                while let Ok(more) = rx.try_recv() {
                    batch += more;
                }
                total += batch;
                b.release(batch);
            }
            total
        });
        for r in readers {
            tokio::time::timeout(Duration::from_secs(30), r)
                .await
                .expect("a reader never got room")
                .unwrap();
        }
        assert!(consumer.await.unwrap() > 0);
        assert!(peak.load(Ordering::SeqCst) <= 1000);
    }
}
