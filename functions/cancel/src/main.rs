//! Lambda for `POST /api/managed-agents/cancel`; see `knoq_shared::routes::cancel`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::cancel::handle).await
}
