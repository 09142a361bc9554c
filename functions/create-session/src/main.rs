//! Lambda for `POST /api/managed-agents/session`; see `knoq_shared::routes::create_session`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::create_session::handle).await
}
