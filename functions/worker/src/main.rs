//! Lambda the turn state machine starts once per turn, beside its poll loop; it plays the
//! turn against the model provider. See `knoq_shared::agent::worker`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    knoq_shared::lambda::serve_worker().await
}
