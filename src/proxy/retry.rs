//! The retry phase: after a failed attempt, [`decide`] says whether another peer may
//! get the request, from the cause's rule ([`crate::error::Cause::retry_rule`]) and
//! the facts of the attempt (how far it got, the method, the body, the attempts left,
//! whether the request may be what crashed the instance). It never panics. The retry
//! budget is asked by the driver only after `decide` says yes.

use crate::error::{Cause, ProxyError, RetryRule, Sent};
use crate::upstream::Lease;
use std::time::Duration;

/// How long a failed attempt on a supervised instance waits to learn whether the
/// instance died (the reset is often seen just before the exit is reaped).
const EXIT_NOTICE_WAIT: Duration = Duration::from_millis(300);

/// The facts of one failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// `retry.attempts` of the pool (at least 1).
    pub max: u32,
    pub idempotent: bool,
    /// The body can go again: there is none, or no byte of it left.
    pub replayable: bool,
    /// The request is the likely cause of the instance's crash (see [`exit_notice`]).
    pub poison: bool,
    /// Earlier attempts whose connection died mid-request with no response and no
    /// instance exit to explain it ([`unexplained_death`]).
    pub died_before: u32,
    /// This attempt's failure is such a death too.
    pub died: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try another peer.
    Again,
    /// Answer with this failure; why not, for the log.
    No(&'static str),
}

/// The one retry decision.
pub fn decide(err: &ProxyError, a: &Attempt) -> Retry {
    let rule = err.cause.retry_rule();
    let allowed = match (rule, err.sent) {
        (RetryRule::Never, _) => return Retry::No("this failure is never retried"),
        (_, Sent::Response) => return Retry::No("the response had begun"),
        (RetryRule::WhenNothingSent | RetryRule::WhenSafe, Sent::Nothing) => true,
        (RetryRule::WhenNothingSent, Sent::Request) => {
            return Retry::No("a slow upstream is not sent the request twice")
        }
        (RetryRule::WhenSafe, Sent::Request) => {
            if !a.idempotent {
                return Retry::No("not idempotent, and the request was sent");
            }
            a.replayable
        }
    };
    if !allowed {
        return Retry::No("the request body was sent and cannot be sent again");
    }
    if a.poison {
        return Retry::No("the request is the likely cause of the instance's crash");
    }
    if a.died && a.died_before > 0 {
        // A pre-fork server's worker can die under a request without its instance
        // exiting (no exit notice, so no poison guard): a second such death is
        // enough to stop, whatever instances remain.
        return Retry::No("a second connection died under this request (retried at most once)");
    }
    if a.number >= a.max {
        return Retry::No("no attempts left");
    }
    Retry::Again
}

/// When an attempt on a supervised instance failed because its connection died, wait
/// briefly for the instance's exit and name it in the error. `None`: no exit explains
/// the death (a remote server, a pre-fork server whose worker died, an exit not seen
/// in time). `Some(poison)`: the instance exited; `poison` says the request is the
/// likely cause (alone on the instance when it crashed by itself, or in flight during
/// a second such crash): it must not take every instance down. `crash_retries`
/// counts the attempts that ended in a crash of the app's own making.
pub async fn exit_notice(
    lease: &Lease,
    err: &mut ProxyError,
    crash_retries: &mut u32,
) -> Option<bool> {
    if err.sent == Sent::Nothing
        || !lease.peer.supervised
        || err.cause != Cause::ConnectionTerminated
    {
        return None;
    }
    let exit = lease.peer.exit_notice(EXIT_NOTICE_WAIT).await?;
    err.context = format!("{} while the request was in flight", exit.reason);
    err.source = None;
    if !exit.self_inflicted {
        return Some(false);
    }
    let poison = exit.inflight <= 1 || *crash_retries > 0;
    if exit.inflight <= 1 {
        err.context
            .push_str(" (the only request in flight: not retried)");
    }
    *crash_retries += 1;
    Some(poison)
}

/// Whether a failure is a connection that died mid-request with no response and no
/// instance exit to explain it: a pre-fork server's worker killed by the request, say.
pub fn unexplained_death(err: &ProxyError, notice: Option<bool>) -> bool {
    notice.is_none() && err.sent == Sent::Request && err.cause == Cause::ConnectionTerminated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(idempotent: bool, replayable: bool) -> Attempt {
        Attempt {
            number: 1,
            max: 3,
            idempotent,
            replayable,
            poison: false,
            died_before: 0,
            died: false,
        }
    }

    #[test]
    fn retry_rules() {
        let refused = ProxyError::new(Cause::ConnectionRefused, "x");
        assert_eq!(
            decide(&refused, &first(false, false)),
            Retry::Again,
            "nothing sent: any method"
        );
        let reset = ProxyError::new(Cause::ConnectionTerminated, "x").sent(Sent::Request);
        assert_eq!(decide(&reset, &first(true, true)), Retry::Again);
        assert!(
            matches!(decide(&reset, &first(false, true)), Retry::No(_)),
            "POST after write is not retried"
        );
        assert!(
            matches!(decide(&reset, &first(true, false)), Retry::No(_)),
            "a consumed body cannot be replayed"
        );
        let late = ProxyError::new(Cause::ConnectionTerminated, "x").sent(Sent::Response);
        assert!(matches!(decide(&late, &first(true, true)), Retry::No(_)));
        let timeout = ProxyError::new(Cause::ResponseTimeout, "x").sent(Sent::Request);
        assert!(
            matches!(decide(&timeout, &first(true, true)), Retry::No(_)),
            "a slow upstream is not hit twice"
        );
        for c in [
            Cause::NoRoute,
            Cause::ClientBodyTimeout,
            Cause::GatewayResources,
        ] {
            assert!(matches!(
                decide(&ProxyError::new(c, "x"), &first(true, true)),
                Retry::No(_)
            ));
        }
        let last = Attempt {
            number: 3,
            ..first(true, true)
        };
        assert!(
            matches!(decide(&refused, &last), Retry::No(_)),
            "no attempts left"
        );
        let poison = Attempt {
            poison: true,
            ..first(true, true)
        };
        assert!(matches!(decide(&reset, &poison), Retry::No(_)));
        let again = Attempt {
            number: 2,
            died_before: 1,
            died: true,
            ..first(true, true)
        };
        assert!(
            matches!(decide(&reset, &again), Retry::No(_)),
            "a connection dying mid-request is retried once at most"
        );
        let refused_after = Attempt {
            died: false,
            ..again
        };
        assert_eq!(
            decide(&refused, &refused_after),
            Retry::Again,
            "a refused connect is not a death"
        );
    }
}
