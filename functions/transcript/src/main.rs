//! Lambda for `GET /api/managed-agents/transcript`; see `knoq_shared::routes::transcript`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::transcript::handle).await
}
