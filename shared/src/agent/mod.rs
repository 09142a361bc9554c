//! The agent runtime: who plays a turn, and how.
//!
//! A turn is played by a **worker** Lambda ([`worker`]) that the turn state machine starts
//! (asynchronously) beside its poll loop, once per turn. The worker claims the turn on the
//! session item, rebuilds the conversation from the transcript ([`history`]), and runs the
//! model loop against the Anthropic Messages API ([`provider`]): a streamed model call, each
//! `tool_use` run through the registry ([`tools`]) and answered with its `tool_result`, then
//! the next call, until the model ends its turn or the step cap is reached. It writes the
//! turn's events itself, each under the guards of [`crate::store::turn_worker`], and renews a
//! lease while it works; a cancel makes its next lease renewal fail, and it drops the model
//! call at once.
//!
//! The checker ([`crate::checker`]), invoked by the poll loop every interval, stays the one that
//! decides that a run is over: cancelled, finished (the worker reported it), failed, or lost
//! (the lease ran out).

pub mod history;
pub mod lease;
pub mod provider;
pub mod sse;
pub mod tools;
pub mod worker;
