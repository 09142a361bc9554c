//! Lambda the turn state machine invokes on every poll cycle; see `knoq_shared::checker`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    knoq_shared::lambda::serve_checker().await
}
