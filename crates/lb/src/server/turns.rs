//! Handshakes take turns, so that connections already serving go first. A worker runs its
//! tasks first come, first served; when ten thousand agents reconnect at once (after an LB
//! failover), thousands of handshakes are ready to run on each worker, each step a signature
//! of a millisecond or more, and a request on a kept-alive connection waited behind all of
//! them: seconds (the herd benchmark's kept-alive agents saw a p99 of 5.9 s, against 0.15 s
//! through HAProxy). Here a handshake takes its next step only in the worker's turn, one
//! handshake at a time: it takes the turn, goes to the back of the run queue (behind whatever
//! else is ready), takes one step and gives the turn to the next. The handshakes waiting for
//! the turn wait off the run queue. A turn is never held while the client is awaited, so a
//! client that stalls its handshake holds up no one else's.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;

/// One worker's turns (one at a time).
#[derive(Debug)]
pub(super) struct Turns(Semaphore);

impl Turns {
    pub(super) fn new() -> Self {
        Self(Semaphore::new(1))
    }

    /// Drives `work` to completion, each poll in a turn of its own.
    pub(super) async fn take<F: Future>(&self, work: F) -> F::Output {
        let mut work = pin!(work);
        loop {
            // Never closed; if it were, polling without a turn is still correct.
            let turn = self.0.acquire().await.ok();
            // Behind what is ready now (and after the next look for I/O, which tokio does
            // before it runs a yielded task again).
            tokio::task::yield_now().await;
            let polled = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
            drop(turn);
            match polled {
                Poll::Ready(output) => return output,
                // `work` has registered this task's waker: sleep until it (or a timer of the
                // caller) wakes the task, then queue for the next turn.
                Poll::Pending => PendingOnce(false).await,
            }
        }
    }
}

/// Pending on its first poll (without waking anyone), ready on the next.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        rc::Rc,
        task::{Context, Poll},
    };

    use super::*;

    /// A handshake of `steps` polls, each counted in `done`; wakes itself after each, as a
    /// handshake whose client has already answered.
    async fn busy(steps: usize, done: Rc<Cell<usize>>) {
        let mut left = steps;
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            done.set(done.get() + 1);
            left -= 1;
            if left == 0 {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }

    /// How many handshake steps ran before a request that became ready right after 200
    /// handshakes did, with and without turns.
    fn steps_before_the_request(with_turns: bool) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let turns = Rc::new(Turns::new());
            let done = Rc::new(Cell::new(0));
            let mut handshakes = Vec::new();
            for _ in 0..200 {
                let (turns, done) = (turns.clone(), done.clone());
                handshakes.push(tokio::task::spawn_local(async move {
                    if with_turns {
                        turns.take(busy(5, done)).await
                    } else {
                        busy(5, done).await
                    }
                }));
            }
            // Let every handshake take its first step, then a request arrives.
            tokio::task::yield_now().await;
            let before = done.get();
            let seen = done.clone();
            let request = tokio::task::spawn_local(async move { seen.get() });
            let at_request = request.await.expect("request");
            for handshake in handshakes {
                handshake.await.expect("handshake");
            }
            assert_eq!(done.get(), 200 * 5, "every handshake finished");
            at_request - before
        })
    }

    #[test]
    fn a_ready_request_waits_for_one_handshake_step_not_for_all_of_them() {
        let without = steps_before_the_request(false);
        let with = steps_before_the_request(true);
        assert!(without >= 150, "without turns the request queues behind them all: {without}");
        assert!(with <= 2, "with turns it waits for at most the step in its turn: {with}");
    }
}
