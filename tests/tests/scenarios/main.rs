//! End-to-end scenarios over real HTTP: `cargo lambda watch` serving the real API paths, the
//! turn state machine of `template.yaml` executing in the emulator, the worker against the
//! bundled provider emulator; faults planted on the emulator where a scenario needs one.
//! One module per theme.

mod agent;
mod faults;
mod http_api;
mod live;
mod purge;
mod robustness;
mod sessions_api;
mod stop;
mod workflow;
