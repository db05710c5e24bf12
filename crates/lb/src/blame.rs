//! Who is to blame for a failed exchange, and what happens next: a pure function of what
//! failed and where, so that one client's fault never takes a backend out of rotation.
//!
//! A failure is the backend's only when the backend caused it: it refused or dropped the
//! connection before the request was sent, reset or closed it while the request was complete,
//! took longer than `timeouts.response` after the request's last byte, or answered with
//! something that is not HTTP. A failure of the client's body (broken framing, a hang-up, a
//! stall, too many bytes) is the client's, whatever the backend did meanwhile. A backend that
//! closes while the body is still arriving may have answered early (a 413) or died; that is
//! nobody's proven fault: no ejection (health checks find a dead member), and the client is
//! told the exchange failed.

use crate::body::ClientFault;

/// What went wrong on the backend side of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// No request byte reached the backend: connect refused or timed out, handshake failed, or
    /// the connection closed before the request was written.
    Connect,
    /// The connection was reset or closed after the request started, before a response head.
    Closed,
    /// No response head within `timeouts.response` of the request's end.
    ResponseTimeout,
    /// The answer was not HTTP.
    Malformed,
}

/// How far the client's body got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upload {
    /// The whole request was handed to the connection (a body-less request always is).
    Complete,
    /// Still arriving when the exchange failed.
    Incomplete,
    /// The client failed its own body.
    Faulted(ClientFault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    Backend,
    Client(ClientFault),
    /// Not provably anyone's.
    Neither,
}

/// What the proxy does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send the request to another member: it never reached this one, or it can be replayed.
    TryAnother,
    /// Answer the client (see [`crate::proxy`]'s error mapping).
    Answer,
}

/// The verdict on one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) blame: Blame,
    /// Take the member out of rotation.
    pub(crate) eject: bool,
    pub(crate) next: Next,
}

/// Judges one failed attempt. `unsent`: the request came back untouched; `replayable`: a
/// body-less GET or HEAD, which may be sent again after it reached a backend.
pub(crate) fn judge(
    class: FailureClass,
    upload: Upload,
    unsent: bool,
    replayable: bool,
) -> Verdict {
    let blame = match (upload, class) {
        (Upload::Faulted(fault), _) => Blame::Client(fault),
        (_, FailureClass::Connect) | (Upload::Complete, _) => Blame::Backend,
        (Upload::Incomplete, _) => Blame::Neither,
    };
    let next = match blame {
        Blame::Backend if unsent || replayable => Next::TryAnother,
        _ => Next::Answer,
    };
    Verdict { blame, eject: blame == Blame::Backend, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    #[test]
    fn only_the_backends_own_failures_eject_it() {
        let framing = Upload::Faulted(ClientFault::Framing);
        let stalled = Upload::Faulted(ClientFault::Stalled);
        let client = |f| Blame::Client(f);
        #[rustfmt::skip]
        let cases = [
            // class, upload, unsent, replayable => blame, eject, next
            (Connect, Upload::Complete, true, false, Blame::Backend, true, Next::TryAnother),
            (Connect, Upload::Incomplete, true, false, Blame::Backend, true, Next::TryAnother),
            (Connect, Upload::Complete, false, false, Blame::Backend, true, Next::Answer),
            (Closed, Upload::Complete, false, true, Blame::Backend, true, Next::TryAnother),
            (Closed, Upload::Complete, false, false, Blame::Backend, true, Next::Answer),
            (ResponseTimeout, Upload::Complete, false, false, Blame::Backend, true, Next::Answer),
            (ResponseTimeout, Upload::Complete, false, true, Blame::Backend, true, Next::TryAnother),
            (Malformed, Upload::Complete, false, false, Blame::Backend, true, Next::Answer),
            // The backend went away while the body was still coming: maybe an early answer.
            (Closed, Upload::Incomplete, false, false, Blame::Neither, false, Next::Answer),
            (Malformed, Upload::Incomplete, false, false, Blame::Neither, false, Next::Answer),
            // The client's own failures, whatever the backend side saw.
            (Closed, framing, false, false, client(ClientFault::Framing), false, Next::Answer),
            (Connect, framing, true, false, client(ClientFault::Framing), false, Next::Answer),
            (ResponseTimeout, stalled, false, false, client(ClientFault::Stalled), false, Next::Answer),
            (Closed, Upload::Faulted(ClientFault::HungUp), false, false, client(ClientFault::HungUp), false, Next::Answer),
            (Closed, Upload::Faulted(ClientFault::TooLarge), false, false, client(ClientFault::TooLarge), false, Next::Answer),
        ];
        for (class, upload, unsent, replayable, blame, eject, next) in cases {
            let verdict = judge(class, upload, unsent, replayable);
            assert_eq!(
                verdict,
                Verdict { blame, eject, next },
                "{class:?} {upload:?} unsent={unsent} replayable={replayable}"
            );
        }
    }
}
