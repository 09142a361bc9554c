//! Lambda for `GET /api/managed-agents/sessions`; see `knoq_shared::routes::list_sessions`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::list_sessions::handle).await
}
