//! Every hook by which a test makes the running system misbehave, in one place, and each
//! honoured only where fault injection is on (`FAULT_INJECTION=true`: `make test` and
//! `make chaos` set it; `make dev` and every deployed stack never do, see
//! [`crate::config::WorkflowConfig::fault_injection`]). Route, checker and worker code ask
//! [`TestHooks`] one question each and otherwise read as production code.
//!
//! | hook | where a test sets it | what it does |
//! |---|---|---|
//! | [`WAKE_UP_FAULT_HEADER`] | a cancel request's header | `skip`: no wake-up is sent; `refuse`: one Step Functions refuses |
//! | [`PURGE_BUDGET_FAULT_HEADER`] | a delete request's header | the delete's purge budget, in ms (0: one batch, the rest left to the sweeper) |
//! | [`HANG_FAULT_MARKER`] | a turn's latest user message | the worker hangs after its first event, as a dead one |
//! | [`CHECKER_FAULT`] | `inject_fault` on the session item | the checker's polls of that session fail |

use std::time::Duration;

use lambda_http::Request;

/// The cancel's request header that makes its wake-up fail (`skip` or `refuse`).
pub const WAKE_UP_FAULT_HEADER: &str = "x-knoq-fault-wake-up";

/// The delete's request header that sets its purge budget in milliseconds.
pub const PURGE_BUDGET_FAULT_HEADER: &str = "x-knoq-fault-purge-budget-ms";

/// Text in a turn's latest user message that makes its worker hang after its first event
/// (no more writes, no lease renewal): how tests kill a worker mid-turn.
pub const HANG_FAULT_MARKER: &str = "knoq-fault:worker-hang";

/// The `inject_fault` value on a session item that makes the checker's polls of it fail.
pub const CHECKER_FAULT: &str = "checker";

/// How a test makes a cancel's wake-up fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeUpFault {
    /// Never send it (as if the call were lost).
    Skip,
    /// Send a token Step Functions refuses.
    Refuse,
}

/// The test hooks of one stack: all on, or all off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestHooks {
    enabled: bool,
}

impl TestHooks {
    /// Hooks honoured only when `enabled` (the stack's fault injection setting).
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    /// Whether any hook is honoured.
    pub fn enabled(self) -> bool {
        self.enabled
    }

    /// The wake-up fault a cancel `request` asks for.
    pub fn wake_up_fault(self, request: &Request) -> Option<WakeUpFault> {
        match self.header(request, WAKE_UP_FAULT_HEADER)? {
            "skip" => Some(WakeUpFault::Skip),
            "refuse" => Some(WakeUpFault::Refuse),
            _ => None,
        }
    }

    /// The purge budget a delete `request` asks for.
    pub fn purge_budget(self, request: &Request) -> Option<Duration> {
        let millis = self.header(request, PURGE_BUDGET_FAULT_HEADER)?.parse().ok()?;
        Some(Duration::from_millis(millis))
    }

    /// Whether the worker of a turn whose latest user message is `latest_user_text` hangs.
    pub fn worker_hangs(self, latest_user_text: Option<&str>) -> bool {
        self.enabled && latest_user_text.is_some_and(|text| text.contains(HANG_FAULT_MARKER))
    }

    /// Whether the checker's poll of a session carrying `injected_fault` fails.
    pub fn checker_fails(self, injected_fault: Option<&str>) -> bool {
        self.enabled && injected_fault == Some(CHECKER_FAULT)
    }

    fn header<'r>(self, request: &'r Request, name: &str) -> Option<&'r str> {
        if !self.enabled {
            return None;
        }
        request.headers().get(name)?.to_str().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, value: &str) -> Request {
        lambda_http::http::Request::builder()
            .header(name, value)
            .body(lambda_http::Body::Empty)
            .unwrap()
    }

    #[test]
    fn no_hook_is_honoured_where_fault_injection_is_off() {
        let off = TestHooks::new(false);
        assert_eq!(off.wake_up_fault(&request(WAKE_UP_FAULT_HEADER, "skip")), None);
        assert_eq!(off.purge_budget(&request(PURGE_BUDGET_FAULT_HEADER, "0")), None);
        assert!(!off.worker_hangs(Some(HANG_FAULT_MARKER)));
        assert!(!off.checker_fails(Some(CHECKER_FAULT)));
    }

    #[test]
    fn each_hook_reads_what_a_test_sets_where_fault_injection_is_on() {
        let on = TestHooks::new(true);
        let skip = request(WAKE_UP_FAULT_HEADER, "skip");
        assert_eq!(on.wake_up_fault(&skip), Some(WakeUpFault::Skip));
        let refuse = request(WAKE_UP_FAULT_HEADER, "refuse");
        assert_eq!(on.wake_up_fault(&refuse), Some(WakeUpFault::Refuse));
        assert_eq!(on.wake_up_fault(&request(WAKE_UP_FAULT_HEADER, "other")), None);
        let budget = request(PURGE_BUDGET_FAULT_HEADER, "250");
        assert_eq!(on.purge_budget(&budget), Some(Duration::from_millis(250)));
        assert_eq!(on.purge_budget(&request(PURGE_BUDGET_FAULT_HEADER, "soon")), None);
        assert!(on.worker_hangs(Some("please knoq-fault:worker-hang now")));
        assert!(!on.worker_hangs(Some("an ordinary message")));
        assert!(on.checker_fails(Some(CHECKER_FAULT)));
        assert!(!on.checker_fails(None));
    }
}
