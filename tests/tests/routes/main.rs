//! Route tests, in process: each route's handler called with a request as API Gateway would
//! send it, against the emulator's tables (no HTTP server, no workflow). One module per route;
//! every row of the contract's table for it, tenant isolation, bad input, races.

mod cancel;
mod create_session;
mod rate_limit;
mod transcript;
